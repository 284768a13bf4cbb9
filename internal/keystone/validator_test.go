package keystone

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeKeystone answers the two calls the validator makes: the service
// user's password login and token validation. Tokens in valid are known;
// everything else is 404, as Keystone answers unknown and expired tokens.
type fakeKeystone struct {
	mu          sync.Mutex
	valid       map[string]time.Time // token → expires_at
	service     string               // the service token currently accepted
	logins      atomic.Int32
	validations atomic.Int32
	delay       time.Duration
	forbid      bool
	loginStatus int // when set, logins fail with this status
}

func newFakeKeystone(t *testing.T) (*fakeKeystone, *httptest.Server) {
	f := &fakeKeystone{valid: map[string]time.Time{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeKeystone) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	delay := f.delay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if r.URL.Path != "/v3/auth/tokens" {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodPost:
		n := f.logins.Add(1)
		if f.loginStatus != 0 {
			w.WriteHeader(f.loginStatus)
			_, _ = w.Write([]byte(`{"error": {"code": 500, "message": "An unexpected error prevented the server from fulfilling your request."}}`))
			return
		}
		f.service = "service-" + string(rune('a'+n))
		w.Header().Set("X-Subject-Token", f.service)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(tokenJSON("service-project", []string{"admin", "service"}, time.Now().Add(time.Hour)))
	case http.MethodGet:
		f.validations.Add(1)
		if r.Header.Get("X-Auth-Token") != f.service {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if f.forbid {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		exp, ok := f.valid[r.Header.Get("X-Subject-Token")]
		if !ok || time.Now().After(exp) {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(tokenJSON("p1", []string{"member", "reader"}, exp))
	}
}

func tokenJSON(project string, roles []string, exp time.Time) map[string]any {
	var rs []map[string]string
	for _, r := range roles {
		rs = append(rs, map[string]string{"id": r + "-id", "name": r})
	}
	return map[string]any{"token": map[string]any{
		"expires_at": exp.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"user":       map[string]any{"id": "u1", "name": "alice"},
		"project":    map[string]any{"id": project, "name": project + "-name"},
		"roles":      rs,
	}}
}

func newTestValidator(t *testing.T, url string, mod func(*Config)) *Validator {
	cfg := Config{AuthURL: url, Username: "neutron", Password: "pw", ProjectName: "service", CacheTime: DefaultCacheTime, Timeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewValidator(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// clock is a settable time source for the cache tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestValidTokenIsCachedForTokenCacheTime(t *testing.T) {
	f, srv := newFakeKeystone(t)
	f.valid["tok"] = time.Now().Add(time.Hour)
	v := newTestValidator(t, srv.URL, func(c *Config) { c.CacheTime = 300 * time.Second })
	clk := &clock{now: time.Now()}
	v.now = clk.Now
	ctx := context.Background()
	tok, err := v.Validate(ctx, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if tok.ProjectID != "p1" || len(tok.Roles) != 2 || tok.Roles[0] != "member" || tok.UserID != "u1" {
		t.Fatalf("token = %+v", tok)
	}
	for range 10 {
		if _, err := v.Validate(ctx, "tok"); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.validations.Load(); n != 1 {
		t.Fatalf("keystone asked %d times within token_cache_time, want 1", n)
	}
	clk.Add(301 * time.Second)
	if _, err := v.Validate(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	if n := f.validations.Load(); n != 2 {
		t.Fatalf("keystone asked %d times after token_cache_time, want 2", n)
	}
}

func TestCachedTokenIsNotTrustedPastItsExpiry(t *testing.T) {
	f, srv := newFakeKeystone(t)
	f.valid["tok"] = time.Now().Add(2 * time.Second)
	v := newTestValidator(t, srv.URL, nil)
	clk := &clock{now: time.Now()}
	v.now = clk.Now
	if _, err := v.Validate(context.Background(), "tok"); err != nil {
		t.Fatal(err)
	}
	clk.Add(3 * time.Second)
	f.mu.Lock()
	f.valid["tok"] = time.Now().Add(-time.Second) // Keystone now calls it expired
	f.mu.Unlock()
	if _, err := v.Validate(context.Background(), "tok"); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("expired token: err = %v, want ErrInvalidToken", err)
	}
}

func TestInvalidTokenIsRememberedBriefly(t *testing.T) {
	f, srv := newFakeKeystone(t)
	v := newTestValidator(t, srv.URL, nil)
	clk := &clock{now: time.Now()}
	v.now = clk.Now
	for range 5 {
		if _, err := v.Validate(context.Background(), "garbage"); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("err = %v, want ErrInvalidToken", err)
		}
	}
	if n := f.validations.Load(); n != 1 {
		t.Fatalf("keystone asked %d times about one invalid token, want 1", n)
	}
	clk.Add(invalidCacheTime + time.Second)
	f.mu.Lock()
	f.valid["garbage"] = time.Now().Add(time.Hour)
	f.mu.Unlock()
	if _, err := v.Validate(context.Background(), "garbage"); err != nil {
		t.Fatalf("after the negative cache time the token is asked about again: %v", err)
	}
}

func TestTokenCacheTimeZeroAsksEveryTime(t *testing.T) {
	f, srv := newFakeKeystone(t)
	f.valid["tok"] = time.Now().Add(time.Hour)
	v := newTestValidator(t, srv.URL, func(c *Config) { c.CacheTime = 0 })
	for range 3 {
		if _, err := v.Validate(context.Background(), "tok"); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.validations.Load(); n != 3 {
		t.Fatalf("keystone asked %d times, want 3", n)
	}
}

// keystonemiddleware documents token_cache_time = -1 as "disable caching
// completely": a neutron.conf saying so starts, and every request asks.
func TestNegativeTokenCacheTimeAsksEveryTime(t *testing.T) {
	f, srv := newFakeKeystone(t)
	f.valid["tok"] = time.Now().Add(time.Hour)
	v := newTestValidator(t, srv.URL, func(c *Config) { c.CacheTime = -time.Second })
	for range 3 {
		if _, err := v.Validate(context.Background(), "tok"); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := v.Validate(context.Background(), "unknown"); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("err = %v, want ErrInvalidToken", err)
		}
	}
	if n := f.validations.Load(); n != 5 {
		t.Fatalf("keystone asked %d times, want 5", n)
	}
}

// When the service user cannot log in, the requests that waited for that
// login get its error: one login attempt for the burst, not one each in
// turn (each bounded by http_connect_timeout), so that every one of them
// gets its 503 promptly.
func TestFailedLoginAnswersEveryoneWaitingForIt(t *testing.T) {
	f, srv := newFakeKeystone(t)
	f.loginStatus = http.StatusInternalServerError
	f.delay = 300 * time.Millisecond
	v := newTestValidator(t, srv.URL, nil)
	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			_, err := v.Validate(context.Background(), "tok-"+string(rune('a'+i)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		var u *UnavailableError
		if !errors.As(err, &u) {
			t.Fatalf("err = %v, want *UnavailableError", err)
		}
	}
	if got := f.logins.Load(); got > 2 {
		t.Errorf("%d requests during a failing login made %d login attempts, want 1 (2 at most)", n, got)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the burst took %s to fail", took)
	}
	// The next request, after the failure, tries again.
	f.mu.Lock()
	f.loginStatus, f.delay = 0, 0
	f.valid["tok"] = time.Now().Add(time.Hour)
	f.mu.Unlock()
	if _, err := v.Validate(context.Background(), "tok"); err != nil {
		t.Fatalf("after Keystone recovered: %v", err)
	}
}

func TestStaleServiceTokenIsRenewedOnce(t *testing.T) {
	f, srv := newFakeKeystone(t)
	f.valid["tok"] = time.Now().Add(time.Hour)
	v := newTestValidator(t, srv.URL, func(c *Config) { c.CacheTime = 0 })
	if _, err := v.Validate(context.Background(), "tok"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.service = "revoked-by-keystone"
	f.mu.Unlock()
	if _, err := v.Validate(context.Background(), "tok"); err != nil {
		t.Fatalf("after Keystone dropped the service token: %v", err)
	}
	if n := f.logins.Load(); n != 2 {
		t.Fatalf("service user logged in %d times, want 2", n)
	}
}

func TestKeystoneTroubleIsUnavailableNotInvalid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*testing.T) string
	}{
		{"down", func(t *testing.T) string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			return "http://" + addr
		}},
		{"slower than the timeout", func(t *testing.T) string {
			f, srv := newFakeKeystone(t)
			f.delay = 2 * time.Second
			return srv.URL
		}},
		{"service user may not validate", func(t *testing.T) string {
			f, srv := newFakeKeystone(t)
			f.forbid = true
			return srv.URL
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestValidator(t, tc.setup(t), func(c *Config) { c.Timeout = 200 * time.Millisecond; c.MaxRetries = 1 })
			_, err := v.Validate(context.Background(), "tok")
			var u *UnavailableError
			if !errors.As(err, &u) {
				t.Fatalf("err = %v, want *UnavailableError", err)
			}
		})
	}
}

func TestConcurrentRequestsWithOneTokenAskKeystoneOnce(t *testing.T) {
	f, srv := newFakeKeystone(t)
	f.valid["tok"] = time.Now().Add(time.Hour)
	f.delay = 100 * time.Millisecond
	v := newTestValidator(t, srv.URL, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := v.Validate(context.Background(), "tok")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.validations.Load(); n != 1 {
		t.Fatalf("20 concurrent requests asked keystone %d times, want 1", n)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no auth_url":     {Username: "u", Password: "p", ProjectName: "s"},
		"not http":        {AuthURL: "keystone:5000", Username: "u", Password: "p", ProjectName: "s"},
		"no service user": {AuthURL: "http://k:5000"},
	} {
		if _, err := NewValidator(cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestWWWAuthenticateNamesKeystone(t *testing.T) {
	v := newTestValidator(t, "http://127.0.0.1:5000/v3", func(c *Config) { c.WWWAuthenticateURI = "https://keystone.example.com:5000" })
	if got, want := v.WWWAuthenticate(), `Keystone uri="https://keystone.example.com:5000"`; got != want {
		t.Fatalf("WWWAuthenticate() = %q, want %q", got, want)
	}
	if v.base != "http://127.0.0.1:5000/v3" {
		t.Fatalf("base = %q", v.base)
	}
}
