// Package local runs a private, real OpenStack Keystone (Debian's keystone
// package under uWSGI) on a loopback address, for tests and for `l3ha lab up
// --keystone`.
//
// Start writes a keystone.conf into a scratch directory (SQLite database,
// Fernet token, receipt and credential keys, cache and log files; nothing
// under /etc/keystone is written, and /etc/keystone/keystone.conf is not
// read), creates the schema with `keystone-manage db_sync` (once per
// installed Keystone: later Starts copy the migrated empty database kept in
// the user's cache directory), runs `keystone-manage bootstrap` (user
// "admin" on project "admin" in domain "Default", region RegionOne, the
// identity service's public, internal and admin endpoints) and serves
// keystone-wsgi-public with uWSGI (a master and one single-threaded worker,
// in their own session and process group) on 127.0.0.1. The listening socket is made by
// this package and handed to uWSGI (--http-socket fd://3), so there is no
// race for a free port. Stop ends the whole process group.
//
// StartIssuer runs a second uWSGI over the same database and keys with a
// short [token] expiration: its tokens are valid Fernet tokens for the main
// instance too, but expire within seconds.
//
// Client is a small Keystone v3 REST client (tokens, projects, users, roles,
// services and endpoints); Provision creates the projects, users and roles
// l3ha's tests use and WriteCloudsYAML writes a clouds.yaml for them.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths of the Debian packages keystone, uwsgi-core and uwsgi-plugin-python3.
const (
	keystoneManage = "/usr/bin/keystone-manage"
	keystoneWSGI   = "/usr/bin/keystone-wsgi-public"
	uwsgiBinary    = "/usr/bin/uwsgi"
	uwsgiPython3   = "/usr/lib/uwsgi/plugins/python3_plugin.so"
)

// Names Start's bootstrap creates.
const (
	AdminUser    = "admin"
	AdminProject = "admin"
	Domain       = "Default" // name of the default domain (its id is "default")
	DomainID     = "default"
	Region       = "RegionOne"
)

// DefaultTokenExpiration is [token] expiration when Options.TokenExpiration
// is zero (Keystone's own default).
const DefaultTokenExpiration = time.Hour

// startTimeout bounds Start and StartIssuer when their context has no
// deadline.
const startTimeout = 3 * time.Minute

// Options configure Start.
type Options struct {
	// Dir is the scratch directory: keystone.conf, the SQLite database,
	// the key repositories and the logs. It is created if missing and must
	// not already hold a Keystone database.
	Dir string
	// TokenExpiration is [token] expiration, in whole seconds (default
	// DefaultTokenExpiration).
	TokenExpiration time.Duration
	// Log receives progress and failures (default: discarded).
	Log *slog.Logger
	// Detach leaves Keystone running when this process exits (the lab's
	// daemons outlive `lab up`; the caller records PID and later ends that
	// process group itself). Without it uWSGI gets SIGTERM when the process
	// that started it dies, so a crashed test leaves nothing behind. (The
	// parent-death signal belongs to the OS thread that started uWSGI:
	// without Detach, do not call Start or StartIssuer from a goroutine
	// that ends locked to its thread.)
	Detach bool
	// Listen, if set, makes the listening socket (for example inside a
	// network namespace: the socket keeps the namespace it was made in). It
	// is called with ("tcp", "127.0.0.1:0") and must return a
	// *net.TCPListener. Default net.Listen.
	Listen func(network, address string) (net.Listener, error)
	// HTTPClient talks to Keystone (readiness checks, AdminClient). Default:
	// a client with a 30 s timeout.
	HTTPClient *http.Client
	// NoSchemaCache makes Start run `keystone-manage db_sync` instead of
	// copying the migrated empty database it keeps in the user's cache
	// directory (<cache>/l3ha/keystone-schema-<hash>.db, one per installed
	// Keystone), and not write one either.
	NoSchemaCache bool
}

// Keystone is a running private Keystone.
type Keystone struct {
	// URL is http://127.0.0.1:PORT; the v3 API is at URL+"/v3"
	// (IdentityURL).
	URL string
	// AdminPassword is the password of the bootstrap user "admin" (admin
	// role on project "admin", domain "Default").
	AdminPassword string
	// Dir is the scratch directory (absolute).
	Dir string

	log    *slog.Logger
	http   *http.Client
	listen func(network, address string) (net.Listener, error)
	detach bool
	conf   config // main instance's config; issuers copy it
	main   *proc

	mu       sync.Mutex
	issuers  []*proc // running issuers, for Stop
	nIssuers int     // issuers started, for their directory names
	stopped  bool

	stopOnce sync.Once
	stopErr  error
}

// Available reports whether the keystone, uwsgi-core and
// uwsgi-plugin-python3 packages are installed.
func Available() error {
	var missing []string
	for _, p := range []string{keystoneManage, keystoneWSGI, uwsgiBinary, uwsgiPython3} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("keystone not installed (missing %s; Debian packages keystone uwsgi-core uwsgi-plugin-python3)", strings.Join(missing, ", "))
	}
	return nil
}

// Start configures, bootstraps and starts a Keystone in o.Dir and returns
// once GET /v3 answers. On failure everything it started is stopped and the
// error carries the tail of the relevant log; o.Dir is left for inspection.
func Start(ctx context.Context, o Options) (*Keystone, error) {
	began := time.Now()
	if err := Available(); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	exp := o.TokenExpiration
	if exp == 0 {
		exp = DefaultTokenExpiration
	}
	if exp < time.Second {
		return nil, fmt.Errorf("local keystone: token expiration %v: must be at least 1s", o.TokenExpiration)
	}
	if o.Dir == "" {
		return nil, errors.New("local keystone: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("local keystone: scratch directory: %w", err)
	}
	if err := checkPath(dir); err != nil {
		return nil, fmt.Errorf("local keystone: scratch directory: %w", err)
	}
	k := &Keystone{
		Dir:    dir,
		log:    o.Log,
		http:   o.HTTPClient,
		listen: o.Listen,
		detach: o.Detach,
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	if k.http == nil {
		k.http = &http.Client{Timeout: 30 * time.Second}
	}
	if k.listen == nil {
		k.listen = net.Listen
	}
	k.log = k.log.With("component", "keystone", "dir", dir)

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local keystone: creating %s: %w", dir, err)
	}
	k.conf = newConfig(dir, exp)
	if _, err := os.Stat(k.conf.Database); err == nil {
		return nil, fmt.Errorf("local keystone: %s already holds a Keystone database; use a fresh directory", dir)
	}
	if k.AdminPassword, err = randomPassword(); err != nil {
		return nil, fmt.Errorf("local keystone: admin password: %w", err)
	}
	if err := k.conf.writeFiles(); err != nil {
		return nil, fmt.Errorf("local keystone: writing configuration: %w", err)
	}
	ln, err := k.listenLoopback()
	if err != nil {
		return nil, err
	}
	k.URL = "http://" + ln.Addr().String()
	k.log = k.log.With("url", k.URL)

	template, err := k.makeSchema(ctx, o.NoSchemaCache)
	if err != nil {
		ln.Close()
		return nil, err
	}

	// uWSGI loads the application (seconds of Python imports) while
	// bootstrap fills the database; neither needs the other.
	t := time.Now()
	srv, err := k.startUWSGI(k.conf, ln, "uwsgi.log")
	if err != nil {
		return nil, err
	}
	k.main = srv
	identity := k.URL + "/v3"
	err = k.manage(ctx, "bootstrap",
		"--bootstrap-username", AdminUser,
		"--bootstrap-project-name", AdminProject,
		"--bootstrap-role-name", "admin",
		"--bootstrap-service-name", "keystone",
		"--bootstrap-region-id", Region,
		"--bootstrap-public-url", identity,
		"--bootstrap-internal-url", identity,
		"--bootstrap-admin-url", identity,
	)
	if err != nil {
		k.stopAfterFailure(srv)
		if template != "" && ctx.Err() == nil {
			// Perhaps the template is to blame; the next Start makes a new one.
			if rerr := os.Remove(template); rerr == nil {
				err = fmt.Errorf("%w\n(the database came from schema template %s, now removed)", err, template)
			}
		}
		return nil, err
	}
	k.log.Debug("keystone-manage bootstrap done", "elapsed", time.Since(t).Round(time.Millisecond))
	if err := k.waitReady(ctx, srv, k.URL); err != nil {
		k.stopAfterFailure(srv)
		return nil, err
	}
	k.log.Info("keystone started", "pid", srv.pid, "elapsed", time.Since(began).Round(time.Millisecond))
	return k, nil
}

// IdentityURL is the v3 API's base URL (the auth_url of clouds.yaml).
func (k *Keystone) IdentityURL() string { return k.URL + "/v3" }

// PID is the uWSGI master's pid, which is also its session and process group
// id.
func (k *Keystone) PID() int { return k.main.pid }

// LogPath is Keystone's own log file.
func (k *Keystone) LogPath() string { return k.conf.LogFile }

// Stop stops the issuers and the main instance and waits until no process
// of their process groups is left. It is idempotent; later calls return
// the first call's result.
func (k *Keystone) Stop() error {
	k.stopOnce.Do(func() {
		k.mu.Lock()
		issuers := k.issuers
		k.issuers = nil
		k.stopped = true
		k.mu.Unlock()
		var errs []error
		for _, p := range issuers {
			errs = append(errs, p.stop())
		}
		errs = append(errs, k.main.stop())
		k.stopErr = errors.Join(errs...)
		if k.stopErr != nil {
			k.log.Error("stopping keystone", "err", k.stopErr)
		} else {
			k.log.Info("keystone stopped", "pid", k.main.pid)
		}
	})
	return k.stopErr
}

// StartIssuer starts a second Keystone over the same database and keys
// whose [token] expiration is expiration (whole seconds, at least 1s): its
// tokens are valid for the main instance too and expire soon. It returns the
// issuer's URL (its v3 API is at url+"/v3") and a function that stops it
// (idempotent; Stop stops it too).
func (k *Keystone) StartIssuer(ctx context.Context, expiration time.Duration) (url string, stop func() error, err error) {
	if expiration < time.Second {
		return "", nil, fmt.Errorf("local keystone: issuer token expiration %v: must be at least 1s", expiration)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	k.mu.Lock()
	k.nIssuers++
	n, stopped := k.nIssuers, k.stopped
	k.mu.Unlock()
	if stopped {
		return "", nil, errors.New("local keystone: StartIssuer after Stop")
	}

	name := "issuer-" + strconv.Itoa(n)
	conf := k.conf.issuer(filepath.Join(k.Dir, name), expiration)
	if err := os.MkdirAll(conf.Dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("local keystone: %s: %w", name, err)
	}
	if err := conf.writeConf(); err != nil {
		return "", nil, fmt.Errorf("local keystone: %s: writing configuration: %w", name, err)
	}
	ln, err := k.listenLoopback()
	if err != nil {
		return "", nil, err
	}
	url = "http://" + ln.Addr().String()
	p, err := k.startUWSGI(conf, ln, filepath.Join(name, "uwsgi.log"))
	if err != nil {
		return "", nil, err
	}
	if err := k.waitReady(ctx, p, url); err != nil {
		k.stopAfterFailure(p)
		return "", nil, err
	}
	k.mu.Lock()
	stopped = k.stopped
	if !stopped {
		k.issuers = append(k.issuers, p)
	}
	k.mu.Unlock()
	if stopped { // Stop ran meanwhile
		return "", nil, errors.Join(errors.New("local keystone: stopped while an issuer started"), p.stop())
	}
	k.log.Info("keystone issuer started", "issuer", name, "issuer_url", url, "pid", p.pid, "token_expiration", conf.Expiration)
	return url, p.stop, nil
}

// listenLoopback makes the socket uWSGI will serve on.
func (k *Keystone) listenLoopback() (*net.TCPListener, error) {
	ln, err := k.listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("local keystone: listening on 127.0.0.1: %w", err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("local keystone: Options.Listen returned a %T, not a *net.TCPListener", ln)
	}
	return tl, nil
}

// makeSchema creates the database with Keystone's schema: a copy of the
// schema template if there is one (its path is returned), else by
// `keystone-manage db_sync`, after which the template is written for the
// next Start.
func (k *Keystone) makeSchema(ctx context.Context, noCache bool) (template string, err error) {
	t := time.Now()
	var restored bool
	if !noCache {
		if template, err = schemaTemplatePath(); err != nil {
			k.log.Warn("no keystone schema template", "err", err)
			template = ""
		} else if restored, err = restoreSchema(template, k.conf.Database); err != nil {
			k.log.Warn("copying the keystone schema template; running db_sync", "template", template, "err", err)
		}
	}
	if err := initDatabase(ctx, k.conf.Database); err != nil {
		return "", fmt.Errorf("local keystone: database %s: %w", k.conf.Database, err)
	}
	if restored {
		k.log.Debug("keystone database copied from the schema template", "template", template, "elapsed", time.Since(t).Round(time.Millisecond))
		return template, nil
	}
	if err := k.manage(ctx, "db_sync"); err != nil {
		return "", err
	}
	k.log.Debug("keystone-manage db_sync done", "elapsed", time.Since(t).Round(time.Millisecond))
	if template != "" {
		if err := saveSchema(ctx, k.conf.Database, template); err != nil {
			k.log.Warn("saving the keystone schema template", "template", template, "err", err)
		} else {
			k.log.Debug("keystone schema template saved", "template", template)
		}
	}
	return "", nil
}

// waitReady polls GET url/v3 until it answers 200, p exits or ctx ends.
func (k *Keystone) waitReady(ctx context.Context, p *proc, url string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		// The socket listens from the start, so a request made while the
		// application loads waits in the backlog rather than failing.
		last = k.getVersion(ctx, url+"/v3")
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("local keystone: waiting for %s/v3 (last error: %v): %w%s", url, last, ctx.Err(), p.logTails())
		case <-p.done:
			return fmt.Errorf("local keystone: uwsgi exited before %s/v3 answered (%v)%s", url, p.waitErr, p.logTails())
		case <-tick.C:
		}
	}
}

func (k *Keystone) getVersion(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// stopAfterFailure kills p when starting failed; the start error matters
// more than a kill error, which is only logged.
func (k *Keystone) stopAfterFailure(p *proc) {
	if err := p.kill(); err != nil {
		k.log.Error("stopping uwsgi after a failed start", "pid", p.pid, "err", err)
	}
}

// AdminClient returns a Client logged in as the bootstrap admin (project
// "admin").
func (k *Keystone) AdminClient(ctx context.Context) (*Client, error) {
	c := NewClient(k.IdentityURL(), k.http)
	if _, err := c.Login(ctx, Credentials{Username: AdminUser, Password: k.AdminPassword, Project: AdminProject}); err != nil {
		return nil, err
	}
	return c, nil
}
