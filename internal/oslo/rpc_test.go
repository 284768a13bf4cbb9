package oslo

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type received struct {
	server, method string
	msgCtx         map[string]any
	args           json.RawMessage
}

// echoEndpoint answers echo/fail/crash calls and reports every request.
func echoEndpoint(server string, got chan<- received) Endpoint {
	rec := func(method string) Handler {
		return func(ctx context.Context, msgCtx map[string]any, args json.RawMessage) (any, error) {
			select {
			case got <- received{server, method, msgCtx, args}:
			default:
			}
			switch method {
			case "fail":
				return nil, Errorf("neutron_lib.exceptions", "RouterNotFound", "Router %s could not be found", "r1")
			case "fail_plain":
				return nil, errors.New("plain go error")
			case "crash":
				panic("boom")
			}
			return map[string]any{"server": server, "args": args, "ctx": msgCtx}, nil
		}
	}
	return Endpoint{Version: "1.4", Methods: map[string]Handler{
		"echo": rec("echo"), "note": rec("note"), "fail": rec("fail"), "fail_plain": rec("fail_plain"), "crash": rec("crash"),
	}}
}

func startServer(t *testing.T, tr *Transport, target Target, eps ...Endpoint) *Server {
	t.Helper()
	s, err := NewServer(tr, target, eps...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return s
}

func waitReceived(t *testing.T, got <-chan received, n int) []received {
	t.Helper()
	var out []received
	timeout := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case r := <-got:
			out = append(out, r)
		case <-timeout:
			t.Fatalf("received %d of %d requests: %+v", len(out), n, out)
		}
	}
	return out
}

func TestGoClientCallsGoServer(t *testing.T) {
	log, _ := newRecLog(t)
	tr := dial(t, log)
	tp := topic(t)
	got := make(chan received, 16)
	startServer(t, tr, Target{Topic: tp, Server: "hostA"}, echoEndpoint("hostA", got))
	startServer(t, tr, Target{Topic: tp, Server: "hostB"}, echoEndpoint("hostB", got))
	cl := NewClient(dial(t, log))
	defer cl.Close()

	ctx := WithMessageContext(context.Background(), map[string]any{"user_id": "u1", "is_admin": true})
	tests := []struct {
		name       string
		target     Target
		method     string
		args       any
		wantServer string // "" = either
		wantErr    string // Error() substring
		wantClass  string // RemoteError class
	}{
		{"call to the topic reaches some server", Target{Topic: tp}, "echo", map[string]any{"a": 1}, "", "", ""},
		{"call to a server reaches that server", Target{Topic: tp, Server: "hostB"}, "echo", nil, "hostB", "", ""},
		{"compatible version", Target{Topic: tp, Server: "hostA", Version: "1.3"}, "echo", nil, "hostA", "", ""},
		{"remote exception keeps class and module", Target{Topic: tp}, "fail", nil, "", "neutron_lib.exceptions.RouterNotFound: Router r1 could not be found", "RouterNotFound"},
		{"plain Go error becomes RuntimeError", Target{Topic: tp}, "fail_plain", nil, "", "RuntimeError: plain go error", "RuntimeError"},
		{"panicking handler becomes an error", Target{Topic: tp}, "crash", nil, "", "panicked: boom", "RuntimeError"},
		{"unknown method is NoSuchMethod", Target{Topic: tp}, "nope", nil, "", "Endpoint does not support RPC method nope", "NoSuchMethod"},
		{"too new version is UnsupportedVersion", Target{Topic: tp, Version: "1.5"}, "echo", nil, "", "Endpoint does not support RPC version 1.5. Attempted method: echo", "UnsupportedVersion"},
		{"args must be an object", Target{Topic: tp}, "echo", []int{1}, "", "args must be a JSON object", ""},
		{"fanout call is refused", Target{Topic: tp, Fanout: true}, "echo", nil, "", "cannot be fanout", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res, err := cl.Call(cctx, tt.target, tt.method, tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				var re *RemoteError
				if tt.wantClass != "" && (!errors.As(err, &re) || re.Class != tt.wantClass) {
					t.Fatalf("error %#v, want RemoteError %s", err, tt.wantClass)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				Server string
				Args   map[string]any
				Ctx    map[string]any
			}
			if err := json.Unmarshal(res, &out); err != nil {
				t.Fatalf("result %s: %v", res, err)
			}
			if tt.wantServer != "" && out.Server != tt.wantServer {
				t.Errorf("served by %s, want %s", out.Server, tt.wantServer)
			}
			if out.Ctx["user_id"] != "u1" || out.Ctx["is_admin"] != true {
				t.Errorf("message context %v", out.Ctx)
			}
		})
	}
	for len(got) > 0 {
		<-got
	}

	t.Run("cast to a server", func(t *testing.T) {
		if err := cl.Cast(ctx, Target{Topic: tp, Server: "hostA"}, "note", map[string]string{"router_id": "r1"}); err != nil {
			t.Fatal(err)
		}
		r := waitReceived(t, got, 1)[0]
		if r.server != "hostA" || r.method != "note" || !strings.Contains(string(r.args), "r1") || r.msgCtx["user_id"] != "u1" {
			t.Errorf("received %+v", r)
		}
	})
	t.Run("fanout cast reaches every server", func(t *testing.T) {
		if err := cl.Cast(ctx, Target{Topic: tp, Fanout: true}, "note", nil); err != nil {
			t.Fatal(err)
		}
		rs := waitReceived(t, got, 2)
		if rs[0].server == rs[1].server {
			t.Errorf("fanout reached %s twice", rs[0].server)
		}
	})
	t.Run("call without a server times out", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := cl.Call(cctx, Target{Topic: topic(t)}, "echo", nil)
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want ErrTimeout", err)
		}
	})
}

func TestServerSurvivesBadInput(t *testing.T) {
	log, logs := newRecLog(t)
	tr := dial(t, log)
	tp := topic(t)
	got := make(chan received, 16)
	startServer(t, tr, Target{Topic: tp, Server: "h"}, echoEndpoint("h", got))
	cl := NewClient(tr)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	raw, err := amqp.Dial(broker(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ch, err := raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{``, `garbage`, `[1]`, `{"oslo.version": "2.0", "oslo.message": "{"}`,
		`{"oslo.version": "9.0", "oslo.message": "{}"}`} {
		if err := ch.PublishWithContext(ctx, "neutron", tp, false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	// A malformed call that names a reply queue gets a failure back.
	body := `{"oslo.version": "2.0", "oslo.message": "{\"args\": {}, \"_msg_id\": \"m1\", \"_reply_q\": \"` + cl.ReplyQueue() + `\"}"}`
	if err := ch.PublishWithContext(ctx, "neutron", tp, false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	// A cast of an unknown method is logged.
	if err := cl.Cast(ctx, Target{Topic: tp}, "no_such_cast", nil); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, 30*time.Second, "dropping malformed request", "body is not a JSON object")
	waitLog(t, logs, 30*time.Second, "dropping malformed request", "unsupported envelope version")
	waitLog(t, logs, 30*time.Second, "cannot dispatch request", "method=no_such_cast", "NoSuchMethod")

	// The server still works.
	if _, err := cl.Call(ctx, Target{Topic: tp}, "echo", nil); err != nil {
		t.Fatalf("call after bad input: %v", err)
	}
}

func TestDuplicateDeliveryIsIgnored(t *testing.T) {
	log, logs := newRecLog(t)
	tr := dial(t, log)
	tp := topic(t)
	got := make(chan received, 16)
	startServer(t, tr, Target{Topic: tp, Server: "h"}, echoEndpoint("h", got))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	body, err := EncodeRequest(&Request{Method: "note", UniqueID: "same-id"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := tr.publish(ctx, publishing{exchange: tr.topicExchange(""), key: tp, body: body, what: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	waitReceived(t, got, 1)
	waitLog(t, logs, 30*time.Second, "ignoring duplicate message", "same-id")
	if len(got) != 0 {
		t.Errorf("duplicate dispatched")
	}
}

func TestStartedServerDeclaresOslosQueues(t *testing.T) {
	log, _ := newRecLog(t)
	tr := dial(t, log)
	tp := topic(t)
	s := startServer(t, tr, Target{Topic: tp, Server: "net1"}, Endpoint{})
	qs := s.Queues()
	if len(qs) != 3 || qs[0] != tp || qs[1] != tp+".net1" || !strings.HasPrefix(qs[2], tp+"_fanout_") || len(qs[2]) != len(tp)+8+32 {
		t.Fatalf("queues %v", qs)
	}
	raw, err := amqp.Dial(broker(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// Passive declarations with oslo's flags succeed only if they match.
	checks := []struct {
		name, kind          string
		durable, autoDelete bool
	}{{"neutron", "topic", false, false}, {tp + "_fanout", "fanout", false, true}}
	for _, c := range checks {
		ch, _ := raw.Channel()
		if err := ch.ExchangeDeclarePassive(c.name, c.kind, c.durable, c.autoDelete, false, false, nil); err != nil {
			t.Errorf("exchange %s: %v", c.name, err)
		}
		ch.Close()
	}
	for _, q := range qs {
		ch, _ := raw.Channel()
		// Redeclaring with the same flags and arguments must be accepted
		// (a mismatch closes the channel with PRECONDITION_FAILED).
		args := amqp.Table(nil)
		if strings.Contains(q, "_fanout_") {
			args = amqp.Table{"x-expires": int32(1800000)}
		}
		if _, err := ch.QueueDeclare(q, false, false, false, false, args); err != nil {
			t.Errorf("queue %s: %v", q, err)
		}
		ch.Close()
	}
}
