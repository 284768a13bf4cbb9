package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/keystone/local"
	"github.com/l3ha/l3ha/internal/servertest"
)

// TestTempestNetworkAPI runs tempest's network API tests
// (`tempest run --regex '^tempest\.api\.network\.'`, Debian's tempest)
// against an l3ha server that authenticates with a real private Keystone,
// with two fake L3 agents. tempest.conf offers exactly the extensions
// l3ha lists in /v2.0/extensions, so a test tempest skips is one l3ha does
// not claim to support; IPv6 is off because l3ha refuses IPv6 subnets
// (TestSubnetsAreIPv4Only); there is no compute, image or volume service.
// Every test must pass or be skipped for one of those reasons.
//
// It takes several minutes: tempest's subnets client sleeps 10 s before
// every subnet delete, and Keystone creates two users per test class.
func TestTempestNetworkAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("tempest takes minutes; not in -short")
	}
	bins, err := tempestPrerequisites()
	if err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("L3HA_TEST_REQUIRE_ALL=1 but %v", err)
		}
		t.Skipf("tempest not runnable here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if d, ok := t.Deadline(); ok {
		if left := time.Until(d); left < tempestBudget {
			msg := fmt.Sprintf("the run takes about 9 minutes and go test's -timeout leaves %v; give it -timeout 30m", left.Round(time.Second))
			if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
				t.Fatalf("L3HA_TEST_REQUIRE_ALL=1 but %s", msg)
			}
			t.Skip(msg)
		}
		// Stop tempest in time to report what it did before go test's
		// own timeout panics.
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-time.Minute))
	}
	defer cancel()

	srv := startKeystoneServer(t, "", nil)
	ks, cloud := srv.ks, srv.cloud
	c := &haCloud{t: t, srv: srv.Instance, agents: map[string]*servertest.FakeAgent{}}
	adminTok, err := local.NewClient(cloud.AuthURL, nil).IssueToken(ctx, local.Credentials{
		Username: local.AdminUser, Password: ks.AdminPassword, Project: local.AdminProject,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.adminHeaders = map[string]string{"X-Auth-Token": adminTok.ID}
	t.Cleanup(haHTTP.CloseIdleConnections)
	// Two L3 agents: HA routers need min_l3_agents_per_router.
	c.startAgents("net1", "net2")
	admin := c.admin()
	public := admin.mustDo("POST", "/v2.0/networks", haBody("network", haObj{
		"name": "public", "router:external": true, "provider:network_type": "flat", "provider:physical_network": "public",
	}), http.StatusCreated).obj("network").str("id")
	admin.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{
		"name": "public-subnet", "network_id": public, "cidr": "172.24.4.0/24", "ip_version": 4, "enable_dhcp": false,
	}), http.StatusCreated)
	var aliases []string
	for _, e := range admin.mustDo("GET", "/v2.0/extensions", nil, http.StatusOK).objs("extensions") {
		aliases = append(aliases, e.str("alias"))
	}
	t.Logf("l3ha lists %d extensions: %s", len(aliases), strings.Join(aliases, ","))

	ws := filepath.Join(t.TempDir(), "tempest")
	home := t.TempDir()
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home,
		"LANG=C.UTF-8", "LC_ALL=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1",
		"TEMPEST_CONFIG_DIR=" + filepath.Join(ws, "etc"), "TEMPEST_CONFIG=tempest.conf",
	}
	run := func(ctx context.Context, dir string, stdout *bytes.Buffer, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = dir, env
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = stdout, &stderr
		if stdout == nil {
			cmd.Stdout = &stderr
		}
		// Its own process group, ended as a whole (stestr's workers too) if
		// ctx ends; killed with this process should it die first (the
		// death signal follows the thread that started it, kept here).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(stderr.String(), 60))
		}
		return nil
	}
	if err := run(ctx, home, nil, bins["tempest"], "init", "--workspace-path", filepath.Join(home, "workspace.yaml"), ws); err != nil {
		t.Fatal(err)
	}
	conf := tempestConf(tempestConfig{
		identityURL: cloud.AuthURL, region: cloud.Region, adminPassword: ks.AdminPassword,
		publicNetwork: public, extensions: aliases,
	})
	if err := os.WriteFile(filepath.Join(ws, "etc", "tempest.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	var out bytes.Buffer
	concurrency := "2"
	if v := os.Getenv("L3HA_TEMPEST_CONCURRENCY"); v != "" {
		concurrency = v
	}
	runErr := run(ctx, ws, &out, bins["tempest"], "run", "--regex", `^tempest\.api\.network\.`, "--concurrency", concurrency)
	took := time.Since(began)
	// Reading the results must work even when ctx ended the run.
	post, cancelPost := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelPost()
	var stream bytes.Buffer
	if err := run(post, ws, &stream, bins["stestr"], "last", "--subunit"); err != nil {
		t.Fatalf("tempest run (%v): %v\nreading its results: %v\n%s", took.Round(time.Second), runErr, err, tail(out.String(), 80))
	}
	results, err := parseSubunit(post, env, stream.Bytes())
	if err != nil {
		t.Fatalf("tempest run (%v): %v\nparsing its results: %v", took.Round(time.Second), runErr, err)
	}
	report := summarize(results, aliases)
	t.Logf("tempest.api.network against l3ha: %d passed, %d skipped, %d failed in %v (concurrency %s)",
		len(report.passed), report.skipped, len(report.failed), took.Round(time.Second), concurrency)
	if i := strings.Index(out.String(), "Worker Balance"); i >= 0 {
		t.Logf("tempest's %s", strings.TrimSpace(out.String()[i:]))
	}
	for _, line := range report.skipLines() {
		t.Log(line)
	}
	for _, f := range report.failed {
		t.Errorf("FAILED %s\n%s", f.ID, f.Traceback)
	}
	for _, u := range report.unexpectedSkips {
		t.Errorf("skipped for a reason other than an extension l3ha does not list, IPv6 or a missing service: %s: %s", u.ID, u.Reason)
	}
	if len(report.passed) == 0 {
		t.Errorf("no tempest test passed")
	}
	if runErr != nil && len(report.failed) == 0 && !t.Failed() {
		t.Errorf("tempest run failed without failed tests: %v\n%s", runErr, tail(out.String(), 80))
	}
}

// tempestBudget is the time TestTempestNetworkAPI needs (about 9 minutes
// on 2 cores at concurrency 2, of which tempest's 10 s sleep before each of
// about 55 subnet deletes is most), with a margin.
const tempestBudget = 13 * time.Minute

// tempestPrerequisites finds tempest and stestr (Debian's tempest and
// python3-stestr); sharedKeystone checks for Keystone.
func tempestPrerequisites() (map[string]string, error) {
	bins := map[string]string{}
	var missing []string
	for _, name := range []string{"tempest", "stestr"} {
		p, err := exec.LookPath("/usr/bin/" + name)
		if err != nil {
			missing = append(missing, "/usr/bin/"+name)
			continue
		}
		bins[name] = p
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import subunit, testtools, tempest").Run(); err != nil {
		missing = append(missing, "python3 modules subunit, testtools and tempest")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s (Debian packages tempest python3-stestr python3-subunit)", strings.Join(missing, ", "))
	}
	return bins, nil
}

type tempestConfig struct {
	identityURL, region, adminPassword, publicNetwork string
	extensions                                        []string
}

// tempestConf is tempest.conf for a cloud of Keystone and l3ha only.
func tempestConf(c tempestConfig) string {
	return fmt.Sprintf(`[DEFAULT]
log_file = tempest.log

[auth]
use_dynamic_credentials = true
admin_username = %s
admin_password = %s
admin_project_name = %s
admin_domain_name = %s

[identity]
uri_v3 = %s
auth_version = v3
region = %s

[identity-feature-enabled]
api_v2 = false

[service_available]
neutron = true
nova = false
glance = false
cinder = false
swift = false

[network]
public_network_id = %s
floating_network_name = public
project_network_cidr = 10.100.0.0/16
project_network_mask_bits = 28

[network-feature-enabled]
# l3ha refuses IPv6 subnets.
ipv6 = false
# What l3ha lists in GET /v2.0/extensions, read from the server.
api_extensions = %s
`, local.AdminUser, c.adminPassword, local.AdminProject, local.Domain, c.identityURL, c.region, c.publicNetwork, strings.Join(c.extensions, ","))
}

// tempestResult is one test (or class setup) in tempest's subunit stream.
type tempestResult struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Reason    string `json:"reason"`
	Traceback string `json:"traceback"`
}

// subunitToJSON reads a subunit v2 stream on stdin and prints its tests as
// JSON, with skip reasons and failure tracebacks (python3-subunit and
// testtools, which tempest depends on).
const subunitToJSON = `
import json, sys
from subunit import ByteStreamToStreamResult
from testtools import StreamToDict
tests = []
result = StreamToDict(tests.append)
result.startTestRun()
ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout").run(result)
result.stopTestRun()
def text(details, key):
    d = details.get(key)
    return d.as_text() if d is not None else ""
json.dump([{"id": t["id"], "status": t["status"], "reason": text(t["details"], "reason"),
            "traceback": text(t["details"], "traceback")} for t in tests], sys.stdout)
`

func parseSubunit(ctx context.Context, env []string, stream []byte) ([]tempestResult, error) {
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", subunitToJSON)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stream)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, stderr.String())
	}
	var rs []tempestResult
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, err
	}
	return rs, nil
}

type tempestReport struct {
	passed, failed  []tempestResult
	skipped         int
	skips           map[string][]string // reason → test ids
	unexpectedSkips []tempestResult
}

// acceptedSkip matches the skips this run expects: an extension l3ha does
// not list, IPv6, and the services the cloud does not have.
var acceptedSkip = regexp.MustCompile(`^(?:(.+) extension not enabled\.|neither (\S+) nor (\S+) extensions are enabled\.|IPv6 Tests are disabled\.|Skipped because the compute service is not available)$`)

// skipExtensions maps the names tempest gives some extensions in skip
// messages to their aliases.
var skipExtensions = map[string]string{
	"Allowed Address Pairs": "allowed-address-pairs",
	"Extra DHCP Options":    "extra_dhcp_opt",
}

// acceptable reports whether a skip reason is one this run expects, and
// for an extension, that l3ha indeed does not list it.
func acceptable(reason string, listed map[string]bool) bool {
	m := acceptedSkip.FindStringSubmatch(reason)
	if m == nil {
		return false
	}
	for _, ext := range m[1:] {
		if alias, ok := skipExtensions[ext]; ok {
			ext = alias
		}
		if strings.Contains(ext, " ") || listed[ext] {
			return false
		}
	}
	return true
}

func summarize(results []tempestResult, aliases []string) tempestReport {
	listed := map[string]bool{}
	for _, a := range aliases {
		listed[a] = true
	}
	r := tempestReport{skips: map[string][]string{}}
	for _, res := range results {
		switch res.Status {
		case "success", "xfail":
			r.passed = append(r.passed, res)
		case "skip":
			r.skipped++
			r.skips[res.Reason] = append(r.skips[res.Reason], res.ID)
			if !acceptable(res.Reason, listed) {
				r.unexpectedSkips = append(r.unexpectedSkips, res)
			}
		case "exists":
			// A test listed but not run: nothing to count.
		default: // fail, uxsuccess, inprogress (started, never ended)
			if res.Traceback == "" {
				res.Traceback = "(status " + res.Status + ", no traceback)"
			}
			r.failed = append(r.failed, res)
		}
	}
	return r
}

// skipLines are the skips grouped by reason, most frequent first.
func (r tempestReport) skipLines() []string {
	reasons := make([]string, 0, len(r.skips))
	for reason := range r.skips {
		reasons = append(reasons, reason)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if a, b := len(r.skips[reasons[i]]), len(r.skips[reasons[j]]); a != b {
			return a > b
		}
		return reasons[i] < reasons[j]
	})
	var out []string
	for _, reason := range reasons {
		ids := r.skips[reason]
		sort.Strings(ids)
		out = append(out, fmt.Sprintf("skipped %d: %s\n    %s", len(ids), reason, strings.Join(ids, "\n    ")))
	}
	return out
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// TestTempestSkipReasons: the skips TestTempestNetworkAPI accepts are those
// for extensions l3ha does not list, IPv6 and missing services; a skip for
// an extension l3ha lists is not.
func TestTempestSkipReasons(t *testing.T) {
	listed := map[string]bool{"router": true, "l3-ha": true}
	for reason, want := range map[string]bool{
		"quotas extension not enabled.":                                   true,
		"Allowed Address Pairs extension not enabled.":                    true,
		"Extra DHCP Options extension not enabled.":                       true,
		"neither tag-ext nor standard-attr-tag extensions are enabled.":   true,
		"IPv6 Tests are disabled.":                                        true,
		"Skipped because the compute service is not available":            true,
		"router extension not enabled.":                                   false,
		"neither l3-ha nor standard-attr-tag extensions are enabled.":     false,
		"Some New Thing extension not enabled.":                           false,
		"Floating ips are not available":                                  false,
		"Either public_network_id or floating_network_name must be given": false,
	} {
		if got := acceptable(reason, listed); got != want {
			t.Errorf("acceptable(%q) = %v, want %v", reason, got, want)
		}
	}
}
