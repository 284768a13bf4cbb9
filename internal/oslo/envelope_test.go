package oslo

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Bodies captured from oslo.messaging 14.0.3 (Debian 12, neutron Zed) on
// the wire.
const (
	pyCast    = `{"oslo.version": "2.0", "oslo.message": "{\"method\": \"do_cast\", \"args\": {\"a\": 1, \"b\": \"x\"}, \"namespace\": \"ns\", \"version\": \"1.3\", \"_unique_id\": \"698de0deb5934173a8f0a0eb66f13efb\", \"_context_user_id\": \"u\", \"_context_project_id\": \"p\"}"}`
	pyReply   = `{"oslo.version": "2.0", "oslo.message": "{\"result\": {\"ctxt\": {\"user_id\": \"uu\", \"client_timeout\": null}, \"kw\": {\"a\": 1}}, \"failure\": null, \"ending\": true, \"_msg_id\": \"m1\", \"_unique_id\": \"bccc08001eac47deb1a5d2f59d36de0e\"}"}`
	pyFailure = `{"oslo.version": "2.0", "oslo.message": "{\"result\": null, \"failure\": \"{\\\"class\\\": \\\"NoSuchMethod\\\", \\\"module\\\": \\\"oslo_messaging.rpc.dispatcher\\\", \\\"message\\\": \\\"Endpoint does not support RPC method nosuch\\\", \\\"tb\\\": [\\\"Traceback (most recent call last):\\\\n\\\"], \\\"args\\\": [\\\"Endpoint does not support RPC method nosuch\\\"], \\\"kwargs\\\": {}}\", \"ending\": true, \"_msg_id\": \"m3\", \"_unique_id\": \"749ffbec8337419793240c27046d1757\"}"}`
)

func TestDecodeRequestReadsPythonCast(t *testing.T) {
	r, err := DecodeRequest([]byte(pyCast))
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{Method: "do_cast", Args: json.RawMessage(`{"a": 1, "b": "x"}`), Namespace: "ns",
		Version: "1.3", UniqueID: "698de0deb5934173a8f0a0eb66f13efb",
		Context: map[string]any{"user_id": "u", "project_id": "p"}}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
}

func TestDecodeReplyReadsPythonReplies(t *testing.T) {
	r, err := DecodeReply([]byte(pyReply))
	if err != nil {
		t.Fatal(err)
	}
	if r.MsgID != "m1" || !r.Ending || r.Failure != nil {
		t.Errorf("unexpected reply %+v", r)
	}
	var res struct{ Kw map[string]int }
	if err := json.Unmarshal(r.Result, &res); err != nil || res.Kw["a"] != 1 {
		t.Errorf("result %s: %v", r.Result, err)
	}

	f, err := DecodeReply([]byte(pyFailure))
	if err != nil {
		t.Fatal(err)
	}
	if f.Failure == nil {
		t.Fatal("no failure decoded")
	}
	re := f.Failure.remoteError()
	if re.Class != "NoSuchMethod" || re.Module != "oslo_messaging.rpc.dispatcher" ||
		re.Message != "Endpoint does not support RPC method nosuch" {
		t.Errorf("unexpected remote error %+v", re)
	}
	if got := re.Error(); got != "remote error: oslo_messaging.rpc.dispatcher.NoSuchMethod: Endpoint does not support RPC method nosuch" {
		t.Errorf("Error() = %q", got)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	to := 30.0
	tests := []struct {
		name string
		req  Request
	}{
		{"cast without namespace or version", Request{Method: "router_deleted",
			Args: json.RawMessage(`{"router_id":"r1"}`), UniqueID: "u1", Context: map[string]any{}}},
		{"call with context and version", Request{Method: "sync_routers",
			Args: json.RawMessage(`{"host":"net1","router_ids":null}`), Version: "1.5", Namespace: "ns",
			UniqueID: "u2", MsgID: "m2", ReplyQ: "reply_x",
			Context: map[string]any{"is_admin": true, "roles": []any{"admin"}, "user_id": nil}}},
		{"call with call-monitor timeout", Request{Method: "m", Args: json.RawMessage(`{}`), UniqueID: "u3",
			MsgID: "m3", ReplyQ: "reply_y", Timeout: &to, Context: map[string]any{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeRequest(&tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeRequest(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, &tt.req) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, &tt.req)
			}
		})
	}
}

func TestEncodeRequestUsesOsloKeys(t *testing.T) {
	b, err := EncodeRequest(&Request{Method: "m", UniqueID: "u", MsgID: "id", ReplyQ: "reply_q",
		Context: map[string]any{"project_id": "p"}})
	if err != nil {
		t.Fatal(err)
	}
	var outer map[string]string
	if err := json.Unmarshal(b, &outer); err != nil {
		t.Fatalf("outer envelope %s: %v", b, err)
	}
	if outer["oslo.version"] != "2.0" || len(outer) != 2 {
		t.Fatalf("envelope %v", outer)
	}
	var inner map[string]any
	if err := json.Unmarshal([]byte(outer["oslo.message"]), &inner); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"method": "m", "args": map[string]any{}, "_unique_id": "u", "_msg_id": "id",
		"_reply_q": "reply_q", "_timeout": nil, "_context_project_id": "p"}
	if !reflect.DeepEqual(inner, want) {
		t.Errorf("inner %v\nwant  %v", inner, want)
	}
}

func TestReplyRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rep  Reply
	}{
		{"result", Reply{Result: json.RawMessage(`{"a":[1,2]}`), Ending: true, MsgID: "m", UniqueID: "u"}},
		{"null result", Reply{Ending: true, MsgID: "m", UniqueID: "u"}},
		{"heartbeat", Reply{Ending: false, MsgID: "m", UniqueID: "u"}},
		{"failure", Reply{Ending: true, MsgID: "m", UniqueID: "u",
			Failure: failureFor(Errorf("neutron.common.exceptions", "RouterNotFound", "Router r1 could not be found"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeReply(&tt.rep)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeReply(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, &tt.rep) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, &tt.rep)
			}
		})
	}
}

func TestFailureOfPlainGoErrorIsRuntimeError(t *testing.T) {
	f := failureFor(errors.New("disk full"))
	if f.Class != "RuntimeError" || f.Module != "builtins" || f.Message != "disk full" ||
		!reflect.DeepEqual(f.Args, []any{"disk full"}) || f.Tb == nil || f.Kwargs == nil {
		t.Errorf("failure %+v", f)
	}
	b, _ := json.Marshal(f)
	if !strings.Contains(string(b), `"tb":[]`) || !strings.Contains(string(b), `"kwargs":{}`) {
		t.Errorf("failure JSON %s lacks empty tb/kwargs", b)
	}
}

func TestDecodeRejectsMalformedInput(t *testing.T) {
	tests := []struct {
		name, body string
	}{
		{"empty", ``},
		{"not json", `garbage{`},
		{"json array", `[1,2]`},
		{"json null", `null`},
		{"json string", `"x"`},
		{"version not a string", `{"oslo.version": 2, "oslo.message": "{}"}`},
		{"future envelope", `{"oslo.version": "3.0", "oslo.message": "{\"method\":\"m\"}"}`},
		{"bad version", `{"oslo.version": "two", "oslo.message": "{}"}`},
		{"message not a string", `{"oslo.version": "2.0", "oslo.message": {"method":"m"}}`},
		{"message not json", `{"oslo.version": "2.0", "oslo.message": "nope"}`},
		{"message is array", `{"oslo.version": "2.0", "oslo.message": "[]"}`},
		{"message null", `{"oslo.version": "2.0", "oslo.message": "null"}`},
		{"no method", `{"oslo.version": "2.0", "oslo.message": "{\"args\":{}}"}`},
		{"method not a string", `{"oslo.version": "2.0", "oslo.message": "{\"method\":5}"}`},
		{"args not an object", `{"oslo.version": "2.0", "oslo.message": "{\"method\":\"m\",\"args\":[1]}"}`},
		{"bad context value", `{"oslo.version": "2.0", "oslo.message": "{\"method\":\"m\",\"_context_x\":}"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeRequest([]byte(tt.body)); !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeRequest(%q) error = %v, want ErrMalformed", tt.body, err)
			}
		})
	}
	for _, body := range []string{``, `[`, `null`, `{"oslo.version": "2.0", "oslo.message": "{\"failure\": 3}"}`,
		`{"oslo.version": "2.0", "oslo.message": "{\"_msg_id\": 3}"}`} {
		if _, err := DecodeReply([]byte(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeReply(%q) error = %v, want ErrMalformed", body, err)
		}
	}
}

func TestDecodeAcceptsUnenvelopedOldMessages(t *testing.T) {
	r, err := DecodeRequest([]byte(`{"method": "m", "args": {"x": 1}, "_context_user": "u"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != "m" || r.Context["user"] != "u" {
		t.Errorf("got %+v", r)
	}
}

func TestDecodeReplyKeepsUnparseableFailureAsError(t *testing.T) {
	r, err := DecodeReply([]byte(`{"oslo.version": "2.0", "oslo.message": "{\"failure\": \"not json\", \"ending\": true}"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Failure == nil || r.Failure.Message != "not json" {
		t.Errorf("failure %+v", r.Failure)
	}
}

func TestVersionCompatible(t *testing.T) {
	tests := []struct {
		imp, req string
		ok       bool
		err      bool
	}{
		{"1.0", "1.0", true, false},
		{"1.4", "1.0", true, false},
		{"1.4", "1.4", true, false},
		{"1.4", "1.5", false, false},
		{"1.4", "2.0", false, false},
		{"2.0", "1.9", false, false},
		{"1.4.1", "1.4.2", false, false},
		{"1.4.2", "1.4.1", true, false},
		{"1.4", "1.4.1", false, false},
		{"1.4", "x.y", false, true},
		{"1.4", "1", false, true},
	}
	for _, tt := range tests {
		ok, err := versionCompatible(tt.imp, tt.req)
		if ok != tt.ok || (err != nil) != tt.err {
			t.Errorf("versionCompatible(%q, %q) = %v, %v; want %v, err=%v", tt.imp, tt.req, ok, err, tt.ok, tt.err)
		}
	}
}

func TestFindDispatchesLikeOslo(t *testing.T) {
	h := func(name string) Handler {
		return func(_ context.Context, _ map[string]any, _ json.RawMessage) (any, error) { return name, nil }
	}
	s := &Server{endpoints: []Endpoint{
		{Version: "1.4", Methods: map[string]Handler{"router_updated": h("v1"), "_private": h("p")}},
		{Namespace: "other", Version: "2.1", Methods: map[string]Handler{"router_updated": h("other")}},
	}}
	tests := []struct {
		name               string
		method, ns, ver    string
		want, class, inMsg string
	}{
		{"default version is 1.0", "router_updated", "", "", "v1", "", ""},
		{"compatible minor", "router_updated", "", "1.3", "v1", "", ""},
		{"namespace selects endpoint", "router_updated", "other", "2.0", "other", "", ""},
		{"unknown method on compatible endpoint", "nope", "", "1.0", "", "NoSuchMethod", "Endpoint does not support RPC method nope"},
		{"private method is not exposed", "_private", "", "1.0", "", "NoSuchMethod", "_private"},
		{"too new minor", "router_updated", "", "1.5", "", "UnsupportedVersion", "Endpoint does not support RPC version 1.5. Attempted method: router_updated"},
		{"unknown namespace", "router_updated", "ns", "1.0", "", "UnsupportedVersion", "version 1.0"},
		{"malformed version", "router_updated", "", "one", "", "ValueError", "invalid version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn, err := s.find(&Request{Method: tt.method, Namespace: tt.ns, Version: tt.ver})
			if tt.class == "" {
				if err != nil {
					t.Fatal(err)
				}
				got, _ := fn(context.Background(), nil, nil)
				if got != tt.want {
					t.Errorf("dispatched to %v, want %v", got, tt.want)
				}
				return
			}
			var re *RemoteError
			if !errors.As(err, &re) || re.Class != tt.class || !strings.Contains(re.Message, tt.inMsg) {
				t.Errorf("error %v, want %s containing %q", err, tt.class, tt.inMsg)
			}
		})
	}
}
