package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

const testToken = "agent-s3cret"

// fakeEndpoint is a fake of the server's agent endpoint: it registers agents,
// serves a desired state that tests set, holds long-polls, records HA state
// reports, and can fail requests (HTTP 500) or drop connections (server down).
type fakeEndpoint struct {
	mu         sync.Mutex
	agentID    string
	interval   float64 // seconds, sent in heartbeat replies
	heartbeats []heartbeatSeen
	state      *agentapi.DesiredState
	stateCh    chan struct{} // closed when state changes
	polls      []pollSeen
	attempts   []agentapi.HAStateReport // every report received
	reports    []agentapi.HAStateReport // reports accepted
	fail       map[string]int           // path → requests still to answer 500
	down       bool                     // drop every connection
	// hold, when set, holds every HA state report until it is closed.
	hold chan struct{}
}

type heartbeatSeen struct {
	at time.Time
	hb agentapi.Heartbeat
}

type pollSeen struct {
	at         time.Time
	host, etag string
	wait       string
}

func newFakeEndpoint() *fakeEndpoint {
	return &fakeEndpoint{agentID: "agent-1", interval: 2, stateCh: make(chan struct{}), fail: map[string]int{}}
}

func (f *fakeEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		panic(http.ErrAbortHandler) // the connection drops
	}
	if r.Header.Get(agentapi.TokenHeader) != testToken {
		neutronError(w, http.StatusUnauthorized, "NotAuthorized", "bad agent token")
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == agentapi.PathHeartbeat:
		var hb agentapi.Heartbeat
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			neutronError(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		f.mu.Lock()
		f.heartbeats = append(f.heartbeats, heartbeatSeen{at: time.Now(), hb: hb})
		failed := f.failing(r.URL.Path)
		reply := agentapi.HeartbeatReply{AgentID: f.agentID, IntervalSeconds: f.interval, AgentDownTimeSeconds: 3 * f.interval}
		f.mu.Unlock()
		if failed {
			neutronError(w, http.StatusInternalServerError, "HTTPInternalServerError", "database is locked")
			return
		}
		writeJSON(w, http.StatusOK, reply)
	case r.Method == http.MethodGet && r.URL.Path == agentapi.PathState:
		f.serveState(w, r)
	case r.Method == http.MethodPost && r.URL.Path == agentapi.PathHAStates:
		var rep agentapi.HAStateReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			neutronError(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
		f.mu.Lock()
		f.attempts = append(f.attempts, rep)
		hold := f.hold
		f.mu.Unlock()
		if hold != nil {
			<-hold
		}
		f.mu.Lock()
		failed := f.failing(r.URL.Path)
		if !failed {
			f.reports = append(f.reports, rep)
		}
		f.mu.Unlock()
		if failed {
			neutronError(w, http.StatusInternalServerError, "HTTPInternalServerError", "database is locked")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		neutronError(w, http.StatusNotFound, "HTTPNotFound", "no such path")
	}
}

// failing consumes one planned failure of path; f.mu is held.
func (f *fakeEndpoint) failing(path string) bool {
	if f.fail[path] > 0 {
		f.fail[path]--
		return true
	}
	return false
}

func (f *fakeEndpoint) serveState(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait, err := strconv.Atoi(q.Get("wait"))
	if err != nil {
		neutronError(w, http.StatusBadRequest, "BadRequest", "bad wait")
		return
	}
	f.mu.Lock()
	f.polls = append(f.polls, pollSeen{at: time.Now(), host: q.Get("host"), etag: q.Get("etag"), wait: q.Get("wait")})
	failed := f.failing(r.URL.Path)
	f.mu.Unlock()
	if failed {
		neutronError(w, http.StatusInternalServerError, "HTTPInternalServerError", "database is locked")
		return
	}
	expired := time.After(time.Duration(wait) * time.Second)
	for {
		f.mu.Lock()
		st, ch, down := f.state, f.stateCh, f.down
		f.mu.Unlock()
		if down {
			panic(http.ErrAbortHandler)
		}
		if st != nil && st.ETag != q.Get("etag") {
			writeJSON(w, http.StatusOK, st)
			return
		}
		select {
		case <-ch:
		case <-expired:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func neutronError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]any{"NeutronError": map[string]string{"type": typ, "message": msg, "detail": ""}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// setState publishes a new desired state, waking held long-polls.
func (f *fakeEndpoint) setState(st agentapi.DesiredState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = &st
	close(f.stateCh)
	f.stateCh = make(chan struct{})
}

// setDown takes the server down (every connection drops, held long-polls
// included) or brings it back.
func (f *fakeEndpoint) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	close(f.stateCh)
	f.stateCh = make(chan struct{})
}

func (f *fakeEndpoint) failNext(path string, n int) {
	f.mu.Lock()
	f.fail[path] = n
	f.mu.Unlock()
}

func (f *fakeEndpoint) setAgentID(id string) {
	f.mu.Lock()
	f.agentID = id
	f.mu.Unlock()
}

func (f *fakeEndpoint) heartbeatsSeen() []heartbeatSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]heartbeatSeen(nil), f.heartbeats...)
}

func (f *fakeEndpoint) pollsSeen() []pollSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pollSeen(nil), f.polls...)
}

func (f *fakeEndpoint) reportsAccepted() []agentapi.HAStateReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]agentapi.HAStateReport(nil), f.reports...)
}

func (f *fakeEndpoint) reportAttempts() []agentapi.HAStateReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]agentapi.HAStateReport(nil), f.attempts...)
}

// serverView is the latest state of every router as the server knows it
// from the accepted reports.
func (f *fakeEndpoint) serverView() map[string]string {
	view := map[string]string{}
	for _, r := range f.reportsAccepted() {
		maps.Copy(view, r.States)
	}
	return view
}

// memTransport serves requests with a handler in the calling goroutine, with
// no network: inside a synctest bubble everything it blocks on is durably
// blocking, so fake time advances while a long-poll is held.
type memTransport struct{ h http.Handler }

func (m memTransport) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			resp, err = nil, errors.New("fake network: connection reset by peer")
		}
	}()
	sreq := req.Clone(req.Context())
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "192.0.2.1:1234"
	rec := httptest.NewRecorder()
	m.h.ServeHTTP(rec, sreq)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	res := rec.Result()
	res.Request = req
	return res, nil
}

// logRecorder is a slog.Handler that keeps the records, for tests that count
// log lines.
type logRecorder struct {
	store *logStore
	attrs []slog.Attr
	tb    testing.TB
}

type logStore struct {
	mu   sync.Mutex
	recs []logRec
}

type logRec struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

func newLogRecorder(tb testing.TB) *logRecorder {
	return &logRecorder{store: &logStore{}, tb: tb}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{level: r.Level, msg: r.Message, attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Any()
		return true
	})
	h.store.mu.Lock()
	h.store.recs = append(h.store.recs, rec)
	h.store.mu.Unlock()
	if testing.Verbose() {
		h.tb.Logf("%s %s %v", r.Level, r.Message, rec.attrs)
	}
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{store: h.store, attrs: append(append([]slog.Attr(nil), h.attrs...), as...), tb: h.tb}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// records returns the records whose message is msg ("" for all).
func (h *logRecorder) records(msg string) []logRec {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	var out []logRec
	for _, r := range h.store.recs {
		if msg == "" || r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}
