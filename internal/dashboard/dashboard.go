// Package dashboard is l3ha server's web dashboard, served at /dashboard/:
// one page that shows, live, where every HA router's master is and how it
// got there, and lets an admin move it (switchover).
//
// The page (plain HTML, CSS and JavaScript embedded in the binary: no build
// step, nothing fetched from elsewhere) holds no data, so it is served to
// anyone; everything it shows comes from requests that carry the API's
// authentication (X-Auth-Token, kept in the browser's sessionStorage; none
// under auth_strategy=noauth) and pass the API's policy:
//
//   - GET /dashboard/state.json, admin only: a snapshot of agents, HA
//     routers and the newest HA transitions, read in one transaction
//     (State); the page polls it every second.
//   - GET /dashboard/bench.svg, admin only: the failover benchmark's plot
//     (`l3ha lab bench compare` writes bench/failover.svg), when the
//     server's dashboard_bench_plot names one.
//   - POST /v2.0/routers/{id}/switchover, the API's own endpoint, for the
//     switchover buttons.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/store"
)

//go:embed static
var staticFiles embed.FS

// Path is where the server mounts the dashboard (and Path+"/").
const Path = "/dashboard"

// DefaultRecentTransitions is how many of the newest HA transitions a
// snapshot holds unless Options says otherwise.
const DefaultRecentTransitions = 100

// Options are the dashboard's settings, from the server's configuration.
type Options struct {
	// AgentDownTime is agent_down_time: an agent silent for this long is
	// dead, and its claim to be master is not shown (as in the API).
	AgentDownTime time.Duration
	// Alive judges an agent alive at a transaction's time, as the API
	// does (the server's ha.Manager.Alive); nil: by its heartbeat's age on
	// the wall clock against AgentDownTime.
	Alive func(a *store.Agent, now time.Time) bool
	// BenchPlot is the server's dashboard_bench_plot: the file served as
	// /dashboard/bench.svg (bench/failover.svg of a benchmark run); ""
	// for none. It is read at each request, so that a new run shows
	// without a restart.
	BenchPlot string
	// RecentTransitions is how many of the newest HA transitions a
	// snapshot holds (0: DefaultRecentTransitions).
	RecentTransitions int
}

// handler serves the dashboard.
type handler struct {
	db     *store.DB
	auth   api.Authenticator
	opts   Options
	log    *slog.Logger
	static map[string]staticFile // by name under /dashboard/ ("" is the page)
}

type staticFile struct {
	body        []byte
	contentType string
	etag        string
}

// New returns the dashboard's handler, for Path and everything under it.
// auth is the API's, so that the dashboard accepts exactly the API's
// credentials.
func New(db *store.DB, auth api.Authenticator, opts Options, log *slog.Logger) (http.Handler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.RecentTransitions <= 0 {
		opts.RecentTransitions = DefaultRecentTransitions
	}
	h := &handler{db: db, auth: auth, opts: opts, log: log, static: map[string]staticFile{}}
	for name, ct := range map[string]string{
		"index.html":  "text/html; charset=utf-8",
		"app.js":      "text/javascript; charset=utf-8",
		"style.css":   "text/css; charset=utf-8",
		"favicon.svg": "image/svg+xml",
	} {
		b, err := fs.ReadFile(staticFiles, "static/"+name)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		f := staticFile{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		if name == "index.html" {
			name = ""
		}
		h.static[name] = f
	}
	return h, nil
}

// contentSecurityPolicy keeps the page to its own files: no inline script,
// nothing from another origin; blob: is the benchmark plot, fetched with
// the token and shown from memory.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == Path {
		// Relative URLs (app.js, state.json, ../v2.0/…) need the
		// trailing slash; they keep working behind a proxy that mounts
		// the server under a prefix.
		http.Redirect(w, r, Path+"/", http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Path+"/")
	if !ok {
		writeError(w, http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "The server could not comply with the request since it is either malformed or otherwise incorrect.")
		return
	}
	switch name {
	case "state.json":
		h.serveState(w, r)
	case "bench.svg":
		h.serveBenchPlot(w, r)
	default:
		f, ok := h.static[name]
		if !ok {
			writeError(w, http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
			return
		}
		w.Header().Set("Content-Type", f.contentType)
		w.Header().Set("ETag", f.etag)
		// Revalidated every time (a 304 mostly), so an upgraded server
		// never runs with an old page.
		w.Header().Set("Cache-Control", "no-cache")
		if name == "" {
			w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	}
}

// challenger is an Authenticator that names where clients authenticate
// (api.KeystoneAuth).
type challenger interface{ WWWAuthenticate() string }

// admin authenticates r as the API does and lets admins through; anyone
// else has had their answer written: 401 as the API's (keystonemiddleware's)
// when unauthenticated, 403 with a NeutronError body for a non-admin,
// Identify's own error otherwise (a 503 when Keystone is down).
func (h *handler) admin(w http.ResponseWriter, r *http.Request, rule string) bool {
	id, err := h.auth.Identify(r)
	if err != nil {
		var e *api.Error
		switch {
		case errors.As(err, &e) && e.Status == http.StatusUnauthorized:
			challenge := "Keystone uri='unused'"
			if c, ok := h.auth.(challenger); ok {
				challenge = c.WWWAuthenticate()
			}
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "401 Unauthorized\n\nThis server could not verify that you are authorized to access the document you requested.", http.StatusUnauthorized)
		case errors.As(err, &e):
			writeError(w, e.Status, e.Type, e.Message)
		default:
			h.log.Error("authenticating a dashboard request", "path", r.URL.Path, "err", err)
			writeError(w, http.StatusInternalServerError, "HTTPInternalServerError", "Request Failed: internal server error while processing your request.")
		}
		return false
	}
	if !id.Admin {
		writeError(w, http.StatusForbidden, "PolicyNotAuthorized", "rule:"+rule+" is disallowed by policy")
		return false
	}
	return true
}

func (h *handler) serveState(w http.ResponseWriter, r *http.Request) {
	if !h.admin(w, r, "get_dashboard_state") {
		return
	}
	snap, err := h.snapshot(r.Context())
	if err != nil {
		status, typ, msg := http.StatusInternalServerError, "HTTPInternalServerError", "Request Failed: internal server error while processing your request."
		if r.Context().Err() != nil {
			status, typ, msg = http.StatusServiceUnavailable, "HTTPServiceUnavailable", "The request was cancelled or timed out."
		} else {
			h.log.Error("building the dashboard's snapshot", "err", err)
		}
		writeError(w, status, typ, msg)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, snap)
}

func (h *handler) serveBenchPlot(w http.ResponseWriter, r *http.Request) {
	if !h.admin(w, r, "get_dashboard_bench_plot") {
		return
	}
	if h.opts.BenchPlot == "" {
		writeError(w, http.StatusNotFound, "HTTPNotFound", "No benchmark plot is configured (dashboard_bench_plot).")
		return
	}
	f, err := os.Open(h.opts.BenchPlot)
	if err != nil {
		// Not an error of the server: the benchmark may not have run yet.
		h.log.Debug("benchmark plot not readable", "path", h.opts.BenchPlot, "err", err)
		writeError(w, http.StatusNotFound, "HTTPNotFound", "The benchmark plot has not been made yet.")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		writeError(w, http.StatusNotFound, "HTTPNotFound", "The benchmark plot has not been made yet.")
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	// An SVG is a document that may hold scripts: the page shows it as an
	// <img> (where they never run), and this stops it from running them
	// if opened on its own.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "bench.svg", st.ModTime(), f)
}

// writeError writes a Neutron error body, as the API does.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"NeutronError": map[string]any{"type": typ, "message": msg, "detail": ""}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
