package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// fakeNeutron is an httptest server that records the requests it gets and
// answers canned Neutron JSON. Answers are looked up by "METHOD /path?query"
// first, then by "METHOD /path"; anything else is Neutron's 404.
type fakeNeutron struct {
	srv *httptest.Server

	mu      sync.Mutex
	answers map[string]cannedAnswer
	reqs    []recordedRequest
}

type cannedAnswer struct {
	status int
	body   string
	ctype  string // default application/json
}

type recordedRequest struct {
	Method string
	URI    string // path and raw query
	Header http.Header
	Body   string
}

func newFakeNeutron(t *testing.T) *fakeNeutron {
	t.Helper()
	f := &fakeNeutron{answers: map[string]cannedAnswer{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// on sets the answer for "METHOD /path" or "METHOD /path?query".
func (f *fakeNeutron) on(key string, status int, body string) *fakeNeutron {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[key] = cannedAnswer{status: status, body: body}
	return f
}

func (f *fakeNeutron) onText(key string, status int, body string) *fakeNeutron {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[key] = cannedAnswer{status: status, body: body, ctype: "text/plain; charset=UTF-8"}
	return f
}

func (f *fakeNeutron) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recordedRequest{Method: r.Method, URI: r.URL.RequestURI(), Header: r.Header.Clone(), Body: string(body)})
	a, ok := f.answers[r.Method+" "+r.URL.RequestURI()]
	if !ok && r.URL.RawQuery == "" {
		a, ok = f.answers[r.Method+" "+r.URL.Path]
	}
	f.mu.Unlock()
	if !ok {
		a = cannedAnswer{status: http.StatusNotFound, body: neutronError("HTTPNotFound", "The resource could not be found.")}
	}
	ctype := a.ctype
	if ctype == "" {
		ctype = "application/json"
	}
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func (f *fakeNeutron) requests() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.reqs...)
}

func neutronError(typ, msg string) string {
	b, _ := json.Marshal(map[string]any{"NeutronError": map[string]string{"type": typ, "message": msg, "detail": ""}})
	return string(b)
}

// clearEnv makes the global flags' defaults independent of the test's environment.
func clearEnv(t *testing.T) {
	for _, v := range []string{envURL, envToken, envProject, envRoles} {
		t.Setenv(v, "")
	}
}

// cliResult is what one run of the command line produced.
type cliResult struct {
	out, errOut string
	err         error
	agentRan    bool
}

// runCLI builds a fresh root command with a dummy "agent" daemon command,
// registers the client commands and runs args against url (when not "").
func runCLI(t *testing.T, url string, args ...string) cliResult {
	t.Helper()
	var res cliResult
	root := &cobra.Command{Use: "l3ha"}
	agent := &cobra.Command{
		Use: "agent",
		Run: func(*cobra.Command, []string) { res.agentRan = true },
	}
	agent.Flags().String("config", "", "agent config (dummy)")
	root.AddCommand(agent)
	Register(root, agent)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	if url != "" {
		args = append([]string{"--url", url}, args...)
	}
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res.err = root.ExecuteContext(ctx)
	res.out, res.errOut = out.String(), errOut.String()
	return res
}
