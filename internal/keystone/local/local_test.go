package local_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/keystone/local"
)

// requireKeystone skips t unless Keystone and uWSGI are installed, or fails
// it when L3HA_TEST_REQUIRE_ALL=1 (CI, where everything must be).
func requireKeystone(t *testing.T) {
	t.Helper()
	if err := local.Available(); err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("%v (L3HA_TEST_REQUIRE_ALL=1)", err)
		}
		t.Skip(err)
	}
}

func TestKeystone(t *testing.T) {
	requireKeystone(t)
	// Generous: a loaded 2-core machine takes several seconds per
	// keystone-manage run.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))

	dir := t.TempDir()
	began := time.Now()
	k, err := local.Start(ctx, local.Options{Dir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			if err := k.Stop(); err != nil {
				t.Error(err)
			}
		}
		if t.Failed() { // the logs go with the TempDir
			for _, l := range []string{k.LogPath(), filepath.Join(dir, "uwsgi.log")} {
				if b, err := os.ReadFile(l); err == nil {
					t.Logf("--- %s:\n%s", l, b[max(0, len(b)-16<<10):])
				}
			}
		}
	})
	started := time.Since(began)
	if !strings.HasPrefix(k.URL, "http://127.0.0.1:") {
		t.Errorf("URL %q: not on 127.0.0.1", k.URL)
	}
	cloud, err := k.Provision(ctx, "http://127.0.0.1:9696")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start %v, Start+Provision %v", started.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))

	hc := &http.Client{Timeout: 30 * time.Second}
	main := local.NewClient(k.IdentityURL(), hc)
	service := local.NewClient(k.IdentityURL(), hc)
	if _, err := service.Login(ctx, cloud.Neutron.Credentials()); err != nil {
		t.Fatal(err)
	}

	t.Run("second Start in the same Dir", func(t *testing.T) {
		_, err := local.Start(ctx, local.Options{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "already holds") {
			t.Fatalf("Start in a used Dir: %v, want an error", err)
		}
	})

	t.Run("roles in tokens", func(t *testing.T) {
		for _, tc := range []struct {
			user    local.User
			project string
			roles   []string
		}{
			{cloud.Admin, "alpha", []string{"admin", "member", "reader"}},
			{cloud.MemberAlpha, "alpha", []string{"member", "reader"}},
			{cloud.ReaderAlpha, "alpha", []string{"reader"}},
			{cloud.MemberBeta, "beta", []string{"member", "reader"}},
			{cloud.Neutron, "service", []string{"admin", "member", "reader", "service"}},
		} {
			tok, err := main.IssueToken(ctx, tc.user.Credentials())
			if err != nil {
				t.Errorf("%s: %v", tc.user.Name, err)
				continue
			}
			roles := slices.Sorted(slices.Values(tok.Roles))
			if !slices.Equal(roles, tc.roles) {
				t.Errorf("%s: roles %v, want %v", tc.user.Name, roles, tc.roles)
			}
			if tok.ProjectName != tc.project || tok.UserName != tc.user.Name || tok.UserID != tc.user.ID {
				t.Errorf("%s: token of user %s (%s) on project %s, want user %s on %s", tc.user.Name, tok.UserName, tok.UserID, tok.ProjectName, tc.user.ID, tc.project)
			}
			if d := tok.ExpiresAt.Sub(tok.IssuedAt); d < 59*time.Minute || d > 61*time.Minute {
				t.Errorf("%s: token lives %v, want 1h", tc.user.Name, d)
			}
			// The service user validates it, as keystonemiddleware does.
			v, err := service.ValidateToken(ctx, tok.ID)
			if err != nil {
				t.Errorf("%s: service user validating: %v", tc.user.Name, err)
			} else if !slices.Equal(slices.Sorted(slices.Values(v.Roles)), tc.roles) {
				t.Errorf("%s: validated roles %v, want %v", tc.user.Name, v.Roles, tc.roles)
			}
		}
		if _, err := main.IssueToken(ctx, local.Credentials{Username: cloud.MemberAlpha.Name, Password: "wrong", Project: "alpha"}); err == nil {
			t.Error("token with a wrong password: no error")
		}
	})

	t.Run("revoke", func(t *testing.T) {
		tok, err := main.IssueToken(ctx, cloud.MemberAlpha.Credentials())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := service.ValidateToken(ctx, tok.ID); err != nil {
			t.Fatalf("before revocation: %v", err)
		}
		admin, err := k.AdminClient(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.RevokeToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		_, err = service.ValidateToken(ctx, tok.ID)
		if !local.IsNotFound(err) {
			t.Fatalf("revoked token: %v, want 404", err)
		}
	})

	t.Run("reader cannot validate others' tokens", func(t *testing.T) {
		reader := local.NewClient(k.IdentityURL(), hc)
		if _, err := reader.Login(ctx, cloud.ReaderAlpha.Credentials()); err != nil {
			t.Fatal(err)
		}
		tok, err := main.IssueToken(ctx, cloud.MemberAlpha.Credentials())
		if err != nil {
			t.Fatal(err)
		}
		var se *local.StatusError
		if _, err := reader.ValidateToken(ctx, tok.ID); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
			t.Fatalf("reader validating another user's token: %v, want 403", err)
		}
	})

	t.Run("network endpoints", func(t *testing.T) {
		admin, err := k.AdminClient(ctx)
		if err != nil {
			t.Fatal(err)
		}
		id, err := admin.EnsureService(ctx, local.NetworkServiceType, local.NetworkServiceName)
		if err != nil {
			t.Fatal(err)
		}
		check := func(want string) {
			t.Helper()
			eps, err := admin.Endpoints(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range eps {
				if e.URL != want || e.Region != local.Region {
					t.Errorf("endpoint %+v, want url %s in %s", e, want, local.Region)
				}
				got = append(got, e.Interface)
			}
			slices.Sort(got)
			if want == "" {
				if len(got) != 0 {
					t.Errorf("endpoints %v, want none", got)
				}
				return
			}
			if !slices.Equal(got, []string{"admin", "internal", "public"}) {
				t.Errorf("endpoint interfaces %v, want admin internal public", got)
			}
		}
		check("http://127.0.0.1:9696")
		if err := k.SetNetworkURL(ctx, "http://127.0.0.1:19696"); err != nil {
			t.Fatal(err)
		}
		check("http://127.0.0.1:19696")
		if err := k.SetNetworkURL(ctx, ""); err != nil {
			t.Fatal(err)
		}
		check("")
		if err := k.SetNetworkURL(ctx, "http://127.0.0.1:9696"); err != nil {
			t.Fatal(err)
		}
		check("http://127.0.0.1:9696")
	})

	t.Run("clouds.yaml", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "clouds.yaml")
		if err := cloud.WriteCloudsYAML(path); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("clouds.yaml mode %v, want 0600", fi.Mode().Perm())
		}
		const cli = "/usr/bin/openstack"
		if _, err := os.Stat(cli); err != nil {
			t.Skip("python3-openstackclient not installed: clouds.yaml not checked with the CLI")
		}
		// One openstack CLI per cloud, in parallel: each takes seconds.
		clouds := []struct{ cloud, project string }{
			{local.CloudAdmin, cloud.Alpha.ID},
			{local.CloudMember, cloud.Alpha.ID},
			{local.CloudReader, cloud.Alpha.ID},
			{local.CloudMemberBeta, cloud.Beta.ID},
		}
		errs := make([]error, len(clouds))
		var wg sync.WaitGroup
		for i, c := range clouds {
			wg.Go(func() {
				cmd := exec.CommandContext(ctx, cli, "--os-cloud", c.cloud, "token", "issue", "-f", "value", "-c", "project_id")
				cmd.Env = append(cleanEnv(), "OS_CLIENT_CONFIG_FILE="+path, "HOME="+filepath.Dir(path))
				out, err := cmd.CombinedOutput()
				if err != nil {
					errs[i] = fmt.Errorf("openstack --os-cloud %s token issue: %v\n%s", c.cloud, err, out)
				} else if got := strings.TrimSpace(string(out)); got != c.project {
					errs[i] = fmt.Errorf("openstack --os-cloud %s: project %q, want %q", c.cloud, got, c.project)
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("issuer", func(t *testing.T) {
		const exp = 3 * time.Second
		url, stopIssuer, err := k.StartIssuer(ctx, exp)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := stopIssuer(); err != nil {
				t.Error(err)
			}
		}()
		tok, err := local.NewClient(url+"/v3", hc).IssueToken(ctx, cloud.MemberAlpha.Credentials())
		if err != nil {
			t.Fatal(err)
		}
		if d := tok.ExpiresAt.Sub(tok.IssuedAt); d != exp {
			t.Errorf("issuer's token lives %v, want %v", d, exp)
		}
		// Valid for the main instance until it expires, then 404.
		if _, err := service.ValidateToken(ctx, tok.ID); err != nil && time.Now().Before(tok.ExpiresAt.Add(-time.Second)) {
			t.Fatalf("issuer's token on the main instance before expiry: %v", err)
		}
		deadline := tok.ExpiresAt.Add(30 * time.Second)
		for {
			_, err := service.ValidateToken(ctx, tok.ID)
			if local.IsNotFound(err) {
				break
			}
			if err != nil {
				t.Fatalf("validating the issuer's token: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("issuer's token (expires_at %v) still valid at %v", tok.ExpiresAt, time.Now().UTC())
			}
			time.Sleep(200 * time.Millisecond)
		}
		if time.Now().Before(tok.ExpiresAt) {
			t.Errorf("issuer's token 404 before its expires_at %v", tok.ExpiresAt)
		}
		if err := stopIssuer(); err != nil {
			t.Fatal(err)
		}
		if _, err := hc.Get(url + "/v3"); err == nil {
			t.Errorf("issuer still answers after its stop")
		}
	})

	t.Run("Provision again", func(t *testing.T) {
		again, err := k.Provision(ctx, "http://127.0.0.1:9696")
		if err != nil {
			t.Fatal(err)
		}
		if again.MemberAlpha.ID != cloud.MemberAlpha.ID || again.Alpha.ID != cloud.Alpha.ID {
			t.Errorf("second Provision: user %s project %s, want the first's %s %s", again.MemberAlpha.ID, again.Alpha.ID, cloud.MemberAlpha.ID, cloud.Alpha.ID)
		}
		if again.MemberAlpha.Password == cloud.MemberAlpha.Password {
			t.Error("second Provision kept the password")
		}
		if _, err := main.IssueToken(ctx, again.MemberAlpha.Credentials()); err != nil {
			t.Errorf("new password: %v", err)
		}
		if _, err := main.IssueToken(ctx, cloud.MemberAlpha.Credentials()); err == nil {
			t.Error("old password still works")
		}
	})

	t.Run("stop", func(t *testing.T) {
		pid := k.PID()
		stopped = true
		if err := k.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("uwsgi master %d after Stop: kill 0: %v, want ESRCH", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d after Stop: kill 0: %v, want ESRCH", pid, err)
		}
		if err := k.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		if _, err := hc.Get(k.URL + "/v3"); err == nil {
			t.Errorf("Keystone still answers after Stop")
		}
	})
}

// cleanEnv is the environment without OS_* variables, which would
// override clouds.yaml.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OS_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestStartFailureCleansUp cancels Start while bootstrap runs (uWSGI
// already started, unless there was no schema template yet and db_sync
// runs): the error says what failed and nothing of this Keystone is left.
func TestStartFailureCleansUp(t *testing.T) {
	requireKeystone(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	k, err := local.Start(ctx, local.Options{Dir: dir})
	if err == nil {
		k.Stop()
		t.Fatal("Start within 1.5 s succeeded; want a deadline error")
	}
	t.Log(err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "keystone-manage") {
		t.Errorf("error %q: want a deadline error naming keystone-manage", err)
	}
	if pids := processesIn(t, dir); len(pids) > 0 {
		t.Errorf("processes %v still run in %s", pids, dir)
	}
}

// processesIn lists the processes whose command line or working
// directory mentions dir.
func processesIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd")
		if strings.Contains(string(cmdline), dir) || strings.HasPrefix(cwd, dir) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
