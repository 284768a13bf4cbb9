package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/keystone"
	"github.com/l3ha/l3ha/internal/keystone/local"
	"github.com/l3ha/l3ha/internal/servertest"
)

// The package's tests share one real Keystone (Debian's keystone 22 under
// uWSGI, on loopback), started by the first test that needs it and stopped
// when the package's tests end: its start-up costs seconds, its tokens
// nothing.
var ksEnv struct {
	once  sync.Once
	dir   string
	ks    *local.Keystone
	cloud *local.Cloud
	err   error
}

func TestMain(m *testing.M) {
	servertest.RunChildIfAsked() // a server process of StartProcess
	code := m.Run()
	if ksEnv.ks != nil {
		if err := ksEnv.ks.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test keystone:", err)
		}
	}
	if ksEnv.dir != "" {
		os.RemoveAll(ksEnv.dir)
	}
	os.Exit(code)
}

// sharedKeystone returns the package's Keystone and its provisioned cloud
// (projects alpha and beta; admin, member and reader users; the service
// user neutron). Without Debian's keystone the test is skipped, or fails
// under L3HA_TEST_REQUIRE_ALL=1 (make test).
func sharedKeystone(t testing.TB) (*local.Keystone, *local.Cloud) {
	t.Helper()
	if err := local.Available(); err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("keystone is not installed (make deps): %v", err)
		}
		t.Skipf("keystone is not installed (make deps): %v", err)
	}
	ksEnv.once.Do(func() {
		ksEnv.dir, ksEnv.err = os.MkdirTemp("", "l3ha-test-keystone-")
		if ksEnv.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		ksEnv.ks, ksEnv.err = local.Start(ctx, local.Options{Dir: ksEnv.dir, Log: log})
		if ksEnv.err != nil {
			return
		}
		ksEnv.cloud, ksEnv.err = ksEnv.ks.Provision(ctx, "")
	})
	if ksEnv.err != nil {
		t.Fatalf("starting the test keystone: %v", ksEnv.err)
	}
	return ksEnv.ks, ksEnv.cloud
}

// keystoneServer is an l3ha server authenticating with the shared Keystone,
// registered in its catalog as the network endpoint.
type keystoneServer struct {
	*servertest.Instance
	ks        *local.Keystone
	cloud     *local.Cloud
	validator *keystone.Validator
}

// startKeystoneServer starts an l3ha server with auth_strategy keystone,
// its service user the cloud's neutron user, and points the catalog's
// network endpoint at it. authURL overrides where it reaches Keystone (a
// proxy in front of it); mod adjusts the rest of [keystone_authtoken].
func startKeystoneServer(t testing.TB, authURL string, mod func(*keystone.Config)) *keystoneServer {
	t.Helper()
	ks, cloud := sharedKeystone(t)
	if authURL == "" {
		authURL = ks.URL
	}
	cfg := keystone.Config{
		AuthURL: authURL, WWWAuthenticateURI: ks.URL,
		Username: cloud.Neutron.Name, Password: cloud.Neutron.Password, ProjectName: cloud.Service.Name,
		CacheTime: keystone.DefaultCacheTime, Timeout: 5 * time.Second, MaxRetries: keystone.DefaultMaxRetries,
	}
	if mod != nil {
		mod(&cfg)
	}
	v, err := keystone.NewValidator(cfg, servertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, servertest.Options{Auth: api.KeystoneAuth{Validator: v}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ks.SetNetworkURL(ctx, srv.URL); err != nil {
		t.Fatalf("registering the network endpoint: %v", err)
	}
	return &keystoneServer{Instance: srv, ks: ks, cloud: cloud, validator: v}
}

// token issues a project-scoped token for u.
func (s *keystoneServer) token(t testing.TB, u local.User) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok, err := local.NewClient(s.ks.IdentityURL(), nil).IssueToken(ctx, u.Credentials())
	if err != nil {
		t.Fatalf("token for %s: %v", u.Name, err)
	}
	return tok.ID
}

// keystoneProxy stands between the l3ha server and Keystone so that tests
// can make Keystone slow or unreachable without stopping the shared one.
type keystoneProxy struct {
	URL   string
	delay atomic.Int64 // nanoseconds added before each request is passed on
	down  atomic.Bool  // connections are cut without an answer
}

func startKeystoneProxy(t testing.TB, target string) *keystoneProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &keystoneProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		if d := time.Duration(p.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	p.URL = "http://" + ln.Addr().String()
	return p
}
