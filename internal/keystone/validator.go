// Package keystone validates OpenStack Keystone v3 tokens for the API
// server, the way keystonemiddleware's auth_token filter does for
// neutron-server: the server logs in as its service user, asks Keystone
// about each client token (GET /v3/auth/tokens with X-Subject-Token), and
// caches the answers — valid tokens for token_cache_time or until they
// expire, whichever is first, invalid ones briefly.
package keystone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// ErrInvalidToken means Keystone does not know the token, or it expired or
// was revoked: the client must authenticate again (401).
var ErrInvalidToken = errors.New("the token is not valid (unknown, expired or revoked)")

// UnavailableError means Keystone could not be asked (down, slow, or it
// refused the service user): the request cannot be authenticated now (503).
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "identity service unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Config is the [keystone_authtoken] section, by keystonemiddleware's names.
type Config struct {
	// AuthURL is where the service user logs in and tokens are validated
	// (auth_url), with or without the /v3 suffix.
	AuthURL string
	// WWWAuthenticateURI goes to clients in 401 responses
	// (www_authenticate_uri); AuthURL when empty.
	WWWAuthenticateURI string
	// The service user (auth_type password). Domains are by name unless
	// the ID is set.
	Username, Password, ProjectName   string
	UserDomainName, ProjectDomainName string
	UserDomainID, ProjectDomainID     string
	// CacheTime bounds how long a valid answer is reused (token_cache_time);
	// zero or negative (keystonemiddleware's -1) asks Keystone every time.
	CacheTime time.Duration
	// Timeout bounds each request to Keystone (http_connect_timeout).
	Timeout time.Duration
	// MaxRetries is how often a request that could not connect is tried
	// again (http_request_max_retries).
	MaxRetries int
	// CacheSize bounds the number of cached tokens (valid and invalid each).
	CacheSize int
	// Client defaults to a client with no overall timeout (Timeout applies).
	Client *http.Client
}

// Defaults as keystonemiddleware's.
const (
	DefaultCacheTime  = 300 * time.Second
	DefaultTimeout    = 10 * time.Second
	DefaultMaxRetries = 3
	DefaultCacheSize  = 10000
	// invalidCacheTime bounds how long an invalid token is remembered: long
	// enough that a client retrying a dead token does not hammer Keystone,
	// short enough that nothing surprising sticks.
	invalidCacheTime = 10 * time.Second
	// serviceTokenMargin renews the service token this long before it
	// expires.
	serviceTokenMargin = time.Minute
)

// Token is what Keystone says about a valid client token.
type Token struct {
	UserID, UserName       string
	ProjectID, ProjectName string // empty for unscoped or domain-scoped tokens
	Roles                  []string
	ExpiresAt, IssuedAt    time.Time
}

// Validator validates client tokens against Keystone, with a cache.
type Validator struct {
	cfg     Config
	base    string // .../v3
	client  *http.Client
	log     *slog.Logger
	now     func() time.Time
	valid   *lru.Cache[string, cachedToken]
	invalid *lru.Cache[string, time.Time]
	flight  singleflight.Group

	// serviceLock (a one-slot channel, so that waiting is cancellable)
	// guards service and serviceExp, the service user's token, and
	// loginErr, the error of the last login attempt; logins counts the
	// attempts.
	serviceLock chan struct{}
	service     string
	serviceExp  time.Time
	loginErr    error
	logins      atomic.Uint64
}

type cachedToken struct {
	token Token
	until time.Time
}

// NewValidator checks cfg and returns a validator; it does not contact
// Keystone until the first request.
func NewValidator(cfg Config, log *slog.Logger) (*Validator, error) {
	if cfg.AuthURL == "" {
		return nil, errors.New("keystone: auth_url is required")
	}
	if !strings.HasPrefix(cfg.AuthURL, "http://") && !strings.HasPrefix(cfg.AuthURL, "https://") {
		return nil, fmt.Errorf("keystone: auth_url %q is not an http(s) URL", cfg.AuthURL)
	}
	if cfg.Username == "" || cfg.Password == "" || cfg.ProjectName == "" {
		return nil, errors.New("keystone: the service user needs username, password and project_name")
	}
	if cfg.UserDomainName == "" && cfg.UserDomainID == "" {
		cfg.UserDomainName = "Default"
	}
	if cfg.ProjectDomainName == "" && cfg.ProjectDomainID == "" {
		cfg.ProjectDomainName = "Default"
	}
	if cfg.CacheTime < 0 {
		cfg.CacheTime = 0
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.WWWAuthenticateURI == "" {
		cfg.WWWAuthenticateURI = cfg.AuthURL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	valid, err := lru.New[string, cachedToken](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	invalid, err := lru.New[string, time.Time](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(cfg.AuthURL, "/")
	if !strings.HasSuffix(base, "/v3") {
		base += "/v3"
	}
	return &Validator{
		cfg: cfg, base: base, client: cfg.Client, log: log.With("auth_url", cfg.AuthURL), now: time.Now,
		valid: valid, invalid: invalid, serviceLock: make(chan struct{}, 1),
	}, nil
}

// WWWAuthenticate is the challenge a 401 carries, as keystonemiddleware
// sends it.
func (v *Validator) WWWAuthenticate() string {
	return fmt.Sprintf("Keystone uri=%q", v.cfg.WWWAuthenticateURI)
}

// Validate returns what Keystone says of token: the token, ErrInvalidToken,
// or an *UnavailableError.
func (v *Validator) Validate(ctx context.Context, token string) (Token, error) {
	if token == "" {
		return Token{}, ErrInvalidToken
	}
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:])
	now := v.now()
	if c, ok := v.valid.Get(key); ok {
		if now.Before(c.until) {
			return c.token, nil
		}
		v.valid.Remove(key)
	}
	if until, ok := v.invalid.Get(key); ok {
		if now.Before(until) {
			return Token{}, ErrInvalidToken
		}
		v.invalid.Remove(key)
	}
	// Concurrent requests with one token ask Keystone once. The lookup
	// runs on its own deadline so that one client giving up does not fail
	// the others waiting on the same answer.
	ch := v.flight.DoChan(key, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.Timeout*time.Duration(2+v.cfg.MaxRetries))
		defer cancel()
		return v.lookup(lctx, key, token)
	})
	select {
	case <-ctx.Done():
		return Token{}, &UnavailableError{Err: ctx.Err()}
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	}
}

func (v *Validator) lookup(ctx context.Context, key, token string) (Token, error) {
	start := v.now()
	t, err := v.validateOnce(ctx, token, "")
	switch {
	case errors.Is(err, ErrInvalidToken):
		v.invalid.Add(key, v.now().Add(min(v.cfg.CacheTime, invalidCacheTime)))
		v.log.Info("token rejected by keystone", "token_sha256", key[:12])
		return Token{}, err
	case err != nil:
		v.log.Warn("cannot validate token", "err", err)
		return Token{}, err
	}
	until := v.now().Add(v.cfg.CacheTime)
	if !t.ExpiresAt.IsZero() && t.ExpiresAt.Before(until) {
		until = t.ExpiresAt
	}
	if v.cfg.CacheTime > 0 {
		v.valid.Add(key, cachedToken{token: t, until: until})
	}
	v.log.Debug("token validated", "user_id", t.UserID, "project_id", t.ProjectID, "roles", t.Roles, "took", v.now().Sub(start))
	return t, nil
}

// validateOnce asks Keystone; a 401 means the service token went stale
// (stale is then that token), so it logs in again and asks once more.
func (v *Validator) validateOnce(ctx context.Context, token, stale string) (Token, error) {
	service, err := v.serviceToken(ctx, stale)
	if err != nil {
		return Token{}, err
	}
	resp, body, err := v.do(ctx, http.MethodGet, v.base+"/auth/tokens?nocatalog", nil, map[string]string{
		"X-Auth-Token": service, "X-Subject-Token": token,
	})
	if err != nil {
		return Token{}, &UnavailableError{Err: fmt.Errorf("validating a token: %w", err)}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return parseToken(body)
	case http.StatusNotFound:
		return Token{}, ErrInvalidToken
	case http.StatusUnauthorized:
		if stale != "" {
			return Token{}, &UnavailableError{Err: errors.New("keystone rejects the service user's fresh token")}
		}
		return v.validateOnce(ctx, token, service)
	case http.StatusForbidden:
		return Token{}, &UnavailableError{Err: fmt.Errorf("the service user %q may not validate tokens (give it the admin or service role): %s", v.cfg.Username, snippet(body))}
	case http.StatusBadRequest:
		// A malformed X-Subject-Token.
		return Token{}, ErrInvalidToken
	default:
		return Token{}, &UnavailableError{Err: fmt.Errorf("validating a token: keystone answered %s: %s", resp.Status, snippet(body))}
	}
}

// serviceToken returns the service user's token, logging in when there is
// none, it is about to expire, or it is stale (Keystone refused it).
// Logins are serialized so that a burst of requests logs in once.
func (v *Validator) serviceToken(ctx context.Context, stale string) (string, error) {
	attempts := v.logins.Load()
	select {
	case v.serviceLock <- struct{}{}:
	case <-ctx.Done():
		return "", &UnavailableError{Err: ctx.Err()}
	}
	defer func() { <-v.serviceLock }()
	if v.service != "" && v.service != stale && v.now().Add(serviceTokenMargin).Before(v.serviceExp) {
		return v.service, nil
	}
	// A login that failed while this caller waited for the lock answers it
	// too: when Keystone is down or refuses the service user, a burst of
	// requests gets its 503 after one login attempt, not after one each,
	// made one after another.
	if v.logins.Load() != attempts && v.loginErr != nil {
		return "", v.loginErr
	}
	tok, exp, err := v.login(ctx)
	v.loginErr = err
	v.logins.Add(1)
	if err != nil {
		return "", err
	}
	v.service, v.serviceExp = tok, exp
	v.log.Info("service user logged in to keystone", "username", v.cfg.Username, "project", v.cfg.ProjectName, "expires_at", exp)
	return tok, nil
}

func (v *Validator) login(ctx context.Context) (string, time.Time, error) {
	domain := func(name, id string) map[string]string {
		if id != "" {
			return map[string]string{"id": id}
		}
		return map[string]string{"name": name}
	}
	req := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": v.cfg.Username, "password": v.cfg.Password, "domain": domain(v.cfg.UserDomainName, v.cfg.UserDomainID),
		}}},
		"scope": map[string]any{"project": map[string]any{
			"name": v.cfg.ProjectName, "domain": domain(v.cfg.ProjectDomainName, v.cfg.ProjectDomainID),
		}},
	}}
	payload, err := json.Marshal(req)
	if err != nil {
		return "", time.Time{}, err
	}
	resp, body, err := v.do(ctx, http.MethodPost, v.base+"/auth/tokens?nocatalog", payload, map[string]string{"Content-Type": "application/json"})
	if err != nil {
		return "", time.Time{}, &UnavailableError{Err: fmt.Errorf("logging in as service user %q: %w", v.cfg.Username, err)}
	}
	if resp.StatusCode != http.StatusCreated {
		return "", time.Time{}, &UnavailableError{Err: fmt.Errorf("logging in as service user %q: keystone answered %s: %s", v.cfg.Username, resp.Status, snippet(body))}
	}
	t, err := parseToken(body)
	if err != nil {
		return "", time.Time{}, &UnavailableError{Err: fmt.Errorf("logging in as service user %q: %w", v.cfg.Username, err)}
	}
	tok := resp.Header.Get("X-Subject-Token")
	if tok == "" {
		return "", time.Time{}, &UnavailableError{Err: errors.New("keystone issued the service user no X-Subject-Token")}
	}
	return tok, t.ExpiresAt, nil
}

// do sends one request, trying again (MaxRetries times) when it could not
// connect; each try is bounded by Timeout.
func (v *Validator) do(ctx context.Context, method, url string, body []byte, headers map[string]string) (*http.Response, []byte, error) {
	var last error
	for attempt := 0; attempt <= v.cfg.MaxRetries; attempt++ {
		if attempt > 0 {
			backoff := time.Duration(50<<min(attempt, 5)) * time.Millisecond
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, nil, errors.Join(last, ctx.Err())
			}
		}
		resp, data, err := v.doOnce(ctx, method, url, body, headers)
		if err == nil {
			return resp, data, nil
		}
		last = err
		if !isConnectError(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, nil, last
}

func (v *Validator) doOnce(ctx context.Context, method, url string, body []byte, headers map[string]string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "l3ha-server")
	for k, val := range headers {
		req.Header.Set(k, val)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("reading keystone's answer: %w", err)
	}
	return resp, data, nil
}

// isConnectError tells a refused or unreachable connection (worth another
// try) from a timeout (which would only double the wait).
func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && !op.Timeout()
}

// TokenBody is Keystone v3's answer about a token (POST and GET
// /v3/auth/tokens), the part of it l3ha reads.
type TokenBody struct {
	Token struct {
		ExpiresAt string `json:"expires_at"`
		IssuedAt  string `json:"issued_at"`
		User      struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"user"`
		Project *struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"project"`
		Roles []struct {
			Name string `json:"name"`
		} `json:"roles"`
	} `json:"token"`
}

// Decode turns the body into a Token.
func (b *TokenBody) Decode() (Token, error) {
	t := Token{UserID: b.Token.User.ID, UserName: b.Token.User.Name}
	if b.Token.Project != nil {
		t.ProjectID, t.ProjectName = b.Token.Project.ID, b.Token.Project.Name
	}
	for _, r := range b.Token.Roles {
		t.Roles = append(t.Roles, r.Name)
	}
	for _, ts := range []struct {
		name, value string
		into        *time.Time
	}{{"expires_at", b.Token.ExpiresAt, &t.ExpiresAt}, {"issued_at", b.Token.IssuedAt, &t.IssuedAt}} {
		if ts.value == "" {
			continue
		}
		parsed, err := time.Parse(time.RFC3339Nano, ts.value)
		if err != nil {
			return Token{}, fmt.Errorf("keystone's token %s %q does not parse: %w", ts.name, ts.value, err)
		}
		*ts.into = parsed
	}
	return t, nil
}

func parseToken(body []byte) (Token, error) {
	var b TokenBody
	if err := json.Unmarshal(body, &b); err != nil {
		return Token{}, &UnavailableError{Err: fmt.Errorf("keystone's token body does not parse: %w", err)}
	}
	t, err := b.Decode()
	if err != nil {
		return Token{}, &UnavailableError{Err: err}
	}
	return t, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
