package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/keystone/local"
)

// A lab with Keystone (`lab up --keystone`) runs a private Keystone next to
// its server: uWSGI serves it on a socket made in the controller's
// namespace (127.0.0.1 there, so only the controller reaches it), the
// server validates tokens with it (auth_strategy keystone), and the lab's
// own API calls log in as the provisioned admin. The lab directory gets
// clouds.yaml for the openstack client run inside the controller
// (`ip netns exec l3ha-<lab>-net1 openstack --os-cloud l3ha-admin …`).

// LabKeystone is what lab.json records of the lab's Keystone.
type LabKeystone struct {
	URL        string `json:"url"` // http://127.0.0.1:PORT in the controller's namespace
	CloudsYAML string `json:"clouds_yaml"`
	// The admin the lab acts as (admin of project alpha).
	AdminUser     string `json:"admin_user"`
	AdminPassword string `json:"admin_password"`
	AdminProject  string `json:"admin_project"`
}

// Paths of the Keystone lab's files.
func keystoneDir(dir string) string         { return filepath.Join(dir, "keystone") }
func serverConfPath(dir string) string      { return filepath.Join(dir, "server.conf") }
func cloudsYAMLPath(dir string) string      { return filepath.Join(dir, "clouds.yaml") }
func controllerNamespace(lab string) string { return NodeNamespace(lab, controllerNode().Name) }

// startKeystone starts and provisions the lab's Keystone, records it in st
// (its uWSGI master as process "keystone") and writes the server's
// [keystone_authtoken] config and clouds.yaml.
func startKeystone(ctx context.Context, o *Options, st *State) error {
	if err := local.Available(); err != nil {
		return fmt.Errorf("lab --keystone: %w", err)
	}
	ns := controllerNamespace(o.Name)
	hc := &http.Client{Transport: &http.Transport{DialContext: nsDialer(ns), DisableKeepAlives: true}, Timeout: 30 * time.Second}
	o.sayf("starting keystone in %s", ns)
	ks, err := local.Start(ctx, local.Options{
		Dir: keystoneDir(o.Dir), Detach: true, HTTPClient: hc,
		Log: slog.New(slog.NewTextHandler(o.Out, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Listen: func(network, addr string) (net.Listener, error) {
			var ln net.Listener
			err := inNamespace(ns, func() error {
				var err error
				ln, err = net.Listen(network, addr)
				return err
			})
			return ln, err
		},
	})
	if err != nil {
		return err
	}
	// Recorded before anything else can fail: Down stops it by this
	// record (or, should `lab up` die first, by its --chdir).
	p := Process{Name: "keystone", Node: controllerNode().Name, Namespace: ns, PID: ks.PID(), Log: ks.LogPath()}
	argv, aerr := cmdlineOf(p.PID)
	start, serr := procStartTime(p.PID)
	if aerr != nil || serr != nil {
		return fmt.Errorf("keystone (uwsgi pid %d) exited once it had started; see %s", p.PID, keystoneDir(o.Dir))
	}
	p.Argv, p.StartTime = argv, start
	st.setProcess(p)
	if err := st.Save(); err != nil {
		return err
	}
	cloud, err := ks.Provision(ctx, st.ServerURL)
	if err != nil {
		return err
	}
	cloud.CACert = caPath(o.Dir) // the lab's server speaks https
	if err := cloud.WriteCloudsYAML(cloudsYAMLPath(o.Dir)); err != nil {
		return err
	}
	conf := fmt.Sprintf(`# Written by l3ha lab up --keystone: the lab server's [keystone_authtoken].
[DEFAULT]
auth_strategy = keystone

[keystone_authtoken]
www_authenticate_uri = %[1]s
auth_url = %[1]s
auth_type = password
username = %[2]s
password = %[3]s
project_name = %[4]s
user_domain_name = Default
project_domain_name = Default
`, ks.URL, cloud.Neutron.Name, cloud.Neutron.Password, cloud.Service.Name)
	if err := os.WriteFile(serverConfPath(o.Dir), []byte(conf), 0o600); err != nil {
		return err
	}
	st.Keystone = &LabKeystone{
		URL: ks.URL, CloudsYAML: cloudsYAMLPath(o.Dir),
		AdminUser: cloud.Admin.Name, AdminPassword: cloud.Admin.Password, AdminProject: cloud.Admin.Project.Name,
	}
	return st.Save()
}

// keystonePIDs returns the processes of the lab's Keystone (its uWSGI
// master and workers, whose command line has --chdir <dir>/keystone, which
// no other process's has); with only, it looks at those pids alone.
func keystonePIDs(dir string, only ...int) []int {
	return pidsWithArgs("--chdir", keystoneDir(dir), only...)
}

// stopKeystoneStrays stops what runs of the lab's Keystone (whether Down
// stopped its recorded master already or its record was lost) and returns
// the pids that are left. Workers that the master respawned meanwhile are
// found by the next round.
func stopKeystoneStrays(o Options) []int {
	for range 3 {
		pids := keystonePIDs(o.Dir)
		if len(pids) == 0 {
			return nil
		}
		o.sayf("stopping %d keystone process(es) of the lab: %v", len(pids), pids)
		stopPIDs(pids, func(pid int) bool { return len(keystonePIDs(o.Dir, pid)) == 1 }, 5*time.Second)
	}
	return keystonePIDs(o.Dir)
}

// keepKeystoneLogs moves Keystone's logs (keystone.log, uwsgi.log and
// keystone-manage.log in <dir>/keystone, which cleanDir removes with the
// database and the keys) into <dir>/logs, for `lab down --keep-logs` and a
// failed `lab up`.
func keepKeystoneLogs(dir string) {
	logs, _ := filepath.Glob(filepath.Join(keystoneDir(dir), "*.log"))
	if len(logs) == 0 || os.MkdirAll(filepath.Join(dir, "logs"), 0o755) != nil {
		return
	}
	for _, l := range logs {
		name := filepath.Base(l)
		if !strings.HasPrefix(name, "keystone") {
			name = "keystone-" + name // uwsgi.log
		}
		_ = os.Rename(l, filepath.Join(dir, "logs", name))
	}
}

// keystoneLogin returns the lab's way to get a token for its own API calls:
// a password login as the lab's admin, remembered until shortly before it
// expires.
func keystoneLogin(st *State) func(ctx context.Context, fresh bool) (string, error) {
	ks := st.Keystone
	hc := &http.Client{Transport: &http.Transport{DialContext: nsDialer(controllerNamespace(st.Name)), DisableKeepAlives: true}, Timeout: 30 * time.Second}
	client := local.NewClient(strings.TrimRight(ks.URL, "/")+"/v3", hc)
	var mu sync.Mutex
	var tok string
	var exp time.Time
	return func(ctx context.Context, fresh bool) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if tok != "" && !fresh && time.Now().Add(time.Minute).Before(exp) {
			return tok, nil
		}
		t, err := client.IssueToken(ctx, local.Credentials{Username: ks.AdminUser, Password: ks.AdminPassword, Project: ks.AdminProject})
		if err != nil {
			return "", fmt.Errorf("logging in to the lab's keystone: %w", err)
		}
		tok, exp = t.ID, t.ExpiresAt
		return tok, nil
	}
}
