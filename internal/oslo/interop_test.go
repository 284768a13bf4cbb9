package oslo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the real oslo.messaging (Debian's python3-oslo.messaging,
// the version neutron-server Zed uses) against the Go code: this is what
// proves the wire format.

const systemPython = "/usr/bin/python3"

func requirePythonOslo(t *testing.T) {
	t.Helper()
	out, err := exec.Command(systemPython, "-c", "import oslo_messaging").CombinedOutput()
	if err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("L3HA_TEST_REQUIRE_ALL=1 but python3-oslo.messaging is unusable: %v\n%s", err, out)
		}
		t.Skipf("skipping interop test: %s cannot import oslo_messaging (apt-get install python3-oslo.messaging): %v", systemPython, err)
	}
}

const pyCommon = `
import json, sys, threading
from oslo_config import cfg
import oslo_messaging as om

URL, TOPIC, SERVER = sys.argv[1], sys.argv[2], sys.argv[3]
om.set_transport_defaults('neutron')
cfg.CONF([], project='l3ha-interop')
transport = om.get_rpc_transport(cfg.CONF, url=URL)
`

const pyServer = pyCommon + `
recorded = []
lock = threading.Lock()

class Main(object):
    target = om.Target(version='1.4')
    def echo(self, ctxt, **kw):
        return {'server': SERVER, 'ctxt': ctxt, 'kw': kw}
    def boom(self, ctxt, **kw):
        raise ValueError('bad value %s' % kw.get('x'))
    def note(self, ctxt, **kw):
        with lock:
            recorded.append({'ctxt': ctxt, 'kw': kw})
    def recorded(self, ctxt):
        with lock:
            return list(recorded)

class Other(object):
    target = om.Target(namespace='other', version='2.3')
    def echo(self, ctxt, **kw):
        return 'other namespace'

server = om.get_rpc_server(transport, om.Target(topic=TOPIC, server=SERVER),
                           [Main(), Other()], executor='threading')
server.start()
print('READY', flush=True)
sys.stdin.read()  # the test closes stdin to stop us
server.stop()
server.wait()
`

const pyClient = pyCommon + `
client = om.get_rpc_client(transport, om.Target(topic=TOPIC), timeout=30)
ctxt = {'user_id': 'u1', 'project_id': 'p1', 'is_admin': True, 'roles': ['admin']}

def run(name, fn):
    out = {'op': name}
    try:
        out['result'] = fn()
    except Exception as e:
        out['error_class'] = type(e).__name__
        out['error_module'] = type(e).__module__
        out['exc_type'] = getattr(e, 'exc_type', None)
        out['value'] = getattr(e, 'value', None)
        out['error'] = str(e)
    print(json.dumps(out), flush=True)

run('call', lambda: client.call(ctxt, 'echo', a=1, b=[1, 'x']))
run('call_server', lambda: client.prepare(server=SERVER).call(ctxt, 'echo'))
run('call_version', lambda: client.prepare(version='1.3').call(ctxt, 'echo'))
run('call_remote_exc', lambda: client.call(ctxt, 'fail'))
run('call_runtime_error', lambda: client.call(ctxt, 'fail_plain'))
run('call_no_such_method', lambda: client.call(ctxt, 'nope'))
run('call_bad_version', lambda: client.prepare(version='1.9').call(ctxt, 'echo'))
run('call_monitor', lambda: client.prepare(call_monitor_timeout=2, timeout=20).call(ctxt, 'slow'))
run('cast', lambda: client.prepare(server=SERVER).cast(ctxt, 'note', router_id='r1'))
run('fanout', lambda: client.prepare(fanout=True).cast(ctxt, 'note', router_id='r2'))
print('DONE', flush=True)
`

// python runs script with the transport URL, topic and server name, and
// returns its stdout lines as they come. Closing stdin ends pyServer.
type python struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *os.File
}

func runPython(t *testing.T, script, url, topic, server string) *python {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "interop.py")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(systemPython, path, url, topic, server)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	cmd.Stderr = errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &python{cmd: cmd, stdin: stdin, lines: make(chan string, 64), stderr: errf}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		errf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(errf.Name())
			t.Logf("python stderr:\n%s", b)
		}
	})
	return p
}

// next returns the next stdout line, failing after d.
func (p *python) next(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			b, _ := os.ReadFile(p.stderr.Name())
			t.Fatalf("python exited early; stderr:\n%s", b)
		}
		return l
	case <-time.After(d):
		b, _ := os.ReadFile(p.stderr.Name())
		t.Fatalf("no output from python within %v; stderr:\n%s", d, b)
	}
	return ""
}

func TestInteropGoClientCallsPythonServer(t *testing.T) {
	requirePythonOslo(t)
	log, _ := newRecLog(t)
	tr := dial(t, log)
	tp := topic(t)
	// A Go server on the same topic first: Python then redeclares the
	// shared <topic> queue and the fanout exchange, which fails with
	// PRECONDITION_FAILED unless our flags are exactly oslo's.
	got := make(chan received, 16)
	startServer(t, tr, Target{Topic: tp, Server: "gohost"}, echoEndpoint("gohost", got))
	py := runPython(t, pyServer, broker(t).TransportURL(), tp, "pyhost")
	if l := py.next(t, 2*time.Minute); l != "READY" {
		t.Fatalf("python server said %q", l)
	}
	cl := NewClient(tr)
	defer cl.Close()
	ctx := WithMessageContext(context.Background(), map[string]any{"user_id": "u1", "project_id": "p1", "is_admin": true})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	py1 := Target{Topic: tp, Server: "pyhost"}

	t.Run("call returns the result and passes the context", func(t *testing.T) {
		res, err := cl.Call(ctx, py1, "echo", map[string]any{"a": 1, "b": []any{1, "x"}})
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Server string
			Ctxt   map[string]any
			Kw     map[string]any
		}
		if err := json.Unmarshal(res, &out); err != nil {
			t.Fatalf("result %s: %v", res, err)
		}
		if out.Server != "pyhost" || out.Ctxt["user_id"] != "u1" || out.Ctxt["is_admin"] != true || out.Kw["a"] != 1.0 {
			t.Errorf("python saw %s", res)
		}
	})
	t.Run("python exception becomes RemoteError", func(t *testing.T) {
		_, err := cl.Call(ctx, py1, "boom", map[string]any{"x": 7})
		var re *RemoteError
		if !errors.As(err, &re) || re.Class != "ValueError" || re.Module != "builtins" || re.Message != "bad value 7" {
			t.Fatalf("error %#v", err)
		}
		if len(re.Traceback) == 0 || !strings.Contains(strings.Join(re.Traceback, ""), "raise ValueError") {
			t.Errorf("traceback %q", re.Traceback)
		}
	})
	t.Run("unknown method is NoSuchMethod", func(t *testing.T) {
		_, err := cl.Call(ctx, py1, "nope", nil)
		var re *RemoteError
		if !errors.As(err, &re) || re.Class != "NoSuchMethod" || re.Module != "oslo_messaging.rpc.dispatcher" {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("namespace and version select the endpoint", func(t *testing.T) {
		res, err := cl.Call(ctx, Target{Topic: tp, Server: "pyhost", Namespace: "other", Version: "2.1"}, "echo", nil)
		if err != nil || string(res) != `"other namespace"` {
			t.Fatalf("result %s, %v", res, err)
		}
		_, err = cl.Call(ctx, Target{Topic: tp, Server: "pyhost", Version: "1.5"}, "echo", nil)
		var re *RemoteError
		if !errors.As(err, &re) || re.Class != "UnsupportedVersion" {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("casts and fanout casts arrive", func(t *testing.T) {
		if err := cl.Cast(ctx, py1, "note", map[string]string{"router_id": "r1"}); err != nil {
			t.Fatal(err)
		}
		if err := cl.Cast(ctx, Target{Topic: tp, Fanout: true}, "note", map[string]string{"router_id": "r2"}); err != nil {
			t.Fatal(err)
		}
		if r := waitReceived(t, got, 1)[0]; r.server != "gohost" || !strings.Contains(string(r.args), "r2") {
			t.Errorf("Go server of the topic got %+v", r)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			res, err := cl.Call(ctx, py1, "recorded", nil)
			if err != nil {
				t.Fatal(err)
			}
			var rec []struct{ Kw map[string]string }
			json.Unmarshal(res, &rec)
			if len(rec) == 2 && rec[0].Kw["router_id"] == "r1" && rec[1].Kw["router_id"] == "r2" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("python recorded %s", res)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("the shared topic queue feeds both servers", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 20 && len(seen) < 2; i++ {
			res, err := cl.Call(ctx, Target{Topic: tp}, "echo", nil)
			if err != nil {
				t.Fatal(err)
			}
			var out struct{ Server string }
			json.Unmarshal(res, &out)
			seen[out.Server] = true
		}
		if !seen["pyhost"] || !seen["gohost"] {
			t.Errorf("calls to the topic reached only %v", seen)
		}
	})
}

func TestInteropPythonClientCallsGoServer(t *testing.T) {
	requirePythonOslo(t)
	log, _ := newRecLog(t)
	tr := dial(t, log)
	tp := topic(t)
	got := make(chan received, 16)
	ep := echoEndpoint("gohost", got)
	ep.Methods["slow"] = func(ctx context.Context, _ map[string]any, _ json.RawMessage) (any, error) {
		// Longer than the call-monitor timeout (2 s): the client only
		// waits because our heartbeats renew it.
		select {
		case <-time.After(3500 * time.Millisecond):
		case <-ctx.Done():
		}
		return "slow done", nil
	}
	startServer(t, tr, Target{Topic: tp, Server: "gohost"}, ep)

	py := runPython(t, pyClient, broker(t).TransportURL(), tp, "gohost")
	results := map[string]map[string]any{}
	for {
		l := py.next(t, 2*time.Minute)
		if l == "DONE" {
			break
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("python printed %q", l)
		}
		results[m["op"].(string)] = m
	}
	type check func(t *testing.T, r map[string]any)
	result := func(f func(t *testing.T, res map[string]any)) check {
		return func(t *testing.T, r map[string]any) {
			if r["error"] != nil {
				t.Fatalf("python got %v: %v", r["error_class"], r["error"])
			}
			res, _ := r["result"].(map[string]any)
			f(t, res)
		}
	}
	remote := func(excType, inValue string) check {
		return func(t *testing.T, r map[string]any) {
			if r["error_class"] != "RemoteError" || r["exc_type"] != excType || !strings.Contains(r["value"].(string), inValue) {
				t.Fatalf("python got %v", r)
			}
		}
	}
	tests := []struct {
		op    string
		check check
	}{
		{"call", result(func(t *testing.T, res map[string]any) {
			args, _ := res["args"].(map[string]any)
			ctx, _ := res["ctx"].(map[string]any)
			if res["server"] != "gohost" || args["a"] != 1.0 || ctx["user_id"] != "u1" || ctx["is_admin"] != true {
				t.Errorf("result %v", res)
			}
			if _, leaked := ctx["client_timeout"]; leaked {
				t.Errorf("oslo internals in the message context: %v", ctx)
			}
		})},
		{"call_server", result(func(t *testing.T, res map[string]any) {})},
		{"call_version", result(func(t *testing.T, res map[string]any) {})},
		{"call_remote_exc", remote("RouterNotFound", "Router r1 could not be found")},
		{"call_runtime_error", func(t *testing.T, r map[string]any) {
			// builtins exceptions are rebuilt as such by oslo.
			if r["error_class"] != "RuntimeError" || !strings.Contains(r["error"].(string), "plain go error") {
				t.Fatalf("python got %v", r)
			}
		}},
		{"call_no_such_method", func(t *testing.T, r map[string]any) {
			if !strings.Contains(r["error"].(string), "Endpoint does not support RPC method nope") {
				t.Fatalf("python got %v", r)
			}
		}},
		{"call_bad_version", func(t *testing.T, r map[string]any) {
			if !strings.Contains(r["error"].(string), "Endpoint does not support RPC version 1.9. Attempted method: echo") {
				t.Fatalf("python got %v", r)
			}
		}},
		{"call_monitor", func(t *testing.T, r map[string]any) {
			if r["result"] != "slow done" {
				t.Fatalf("python got %v", r)
			}
		}},
		{"cast", func(t *testing.T, r map[string]any) {}},
		{"fanout", func(t *testing.T, r map[string]any) {}},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			r, ok := results[tt.op]
			if !ok {
				t.Fatalf("python did not report %s", tt.op)
			}
			tt.check(t, r)
		})
	}
	var notes []received
	for _, r := range waitReceived(t, got, 7) { // 5 recorded calls (echo x3, fail, fail_plain) + 2 casts
		if r.method == "note" {
			notes = append(notes, r)
		}
	}
	// Casts are dispatched concurrently, as oslo.messaging's executor does:
	// they may be handled in either order.
	slices.SortFunc(notes, func(a, b received) int { return strings.Compare(string(a.args), string(b.args)) })
	if len(notes) != 2 || !strings.Contains(string(notes[0].args), "r1") || !strings.Contains(string(notes[1].args), "r2") ||
		notes[0].msgCtx["project_id"] != "p1" {
		t.Errorf("casts from python: %+v", notes)
	}
}
