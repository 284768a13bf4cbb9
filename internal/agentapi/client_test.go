package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHeartbeat(t *testing.T) {
	var got Heartbeat
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != PathHeartbeat {
			t.Errorf("request %s %s, want POST %s", r.Method, r.URL.Path, PathHeartbeat)
		}
		if tok := r.Header.Get(TokenHeader); tok != "s3cret" {
			t.Errorf("token %q, want s3cret", tok)
		}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decoding heartbeat: %v", err)
		}
		json.NewEncoder(w).Encode(HeartbeatReply{AgentID: "a1", IntervalSeconds: 2.5, AgentDownTimeSeconds: 7.5})
	}))
	defer srv.Close()

	c := NewClient([]string{srv.URL + "/"}, "s3cret", srv.Client(), nil)
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	reply, err := c.Heartbeat(context.Background(), Heartbeat{
		Host: "net1", AgentType: AgentTypeL3, Binary: BinaryL3, Topic: TopicL3, StartedAt: started,
		Configurations: map[string]any{"agent_mode": ModeLegacy},
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply.AgentID != "a1" || reply.IntervalSeconds != 2.5 || reply.AgentDownTimeSeconds != 7.5 {
		t.Errorf("reply %+v", reply)
	}
	if got.Host != "net1" || got.AgentType != AgentTypeL3 || !got.StartedAt.Equal(started) || got.Configurations["agent_mode"] != ModeLegacy {
		t.Errorf("server got %+v", got)
	}
}

func TestWaitState(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != PathState {
			t.Errorf("request %s %s, want GET %s", r.Method, r.URL.Path, PathState)
		}
		q := r.URL.Query()
		if q.Get("host") != "net1" {
			t.Errorf("host %q", q.Get("host"))
		}
		switch q.Get("etag") {
		case "":
			if q.Get("wait") != "30" {
				t.Errorf("wait %q, want 30", q.Get("wait"))
			}
			json.NewEncoder(w).Encode(DesiredState{ETag: "e1", Host: "net1", Routers: []RouterSpec{{ID: "r1", BindingIndex: 1}}})
		case "e1":
			if q.Get("wait") != "1" {
				t.Errorf("wait %q, want 1 (rounded up)", q.Get("wait"))
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer srv.Close()
	c := NewClient([]string{srv.URL}, "t", nil, nil)
	ctx := context.Background()

	st, changed, err := c.WaitState(ctx, "net1", "", 30*time.Second)
	if err != nil || !changed || st == nil {
		t.Fatalf("WaitState = %v, %v, %v", st, changed, err)
	}
	if st.ETag != "e1" || len(st.Routers) != 1 || st.Routers[0].ID != "r1" {
		t.Errorf("state %+v", st)
	}

	st, changed, err = c.WaitState(ctx, "net1", "e1", 300*time.Millisecond)
	if err != nil || changed || st != nil {
		t.Fatalf("WaitState unchanged = %v, %v, %v", st, changed, err)
	}

	_, _, err = c.WaitState(ctx, "net1", "other", time.Second)
	if !IsStatus(err, http.StatusTeapot) {
		t.Fatalf("err = %v, want status 418", err)
	}
}

func TestNeutronErrorBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"NeutronError":{"type":"NotAuthorized","message":"bad agent token","detail":""}}`))
	}))
	defer srv.Close()
	c := NewClient([]string{srv.URL}, "wrong", nil, nil)

	err := c.ReportHAStates(context.Background(), HAStateReport{Host: "h", States: map[string]string{"r": HAActive}})
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v (%T), want *StatusError", err, err)
	}
	if se.StatusCode != 401 || se.Type != "NotAuthorized" || se.Message != "bad agent token" || se.Op != "reporting HA states" {
		t.Errorf("StatusError %+v", se)
	}
	for _, want := range []string{"reporting HA states", "401", "bad agent token", PathHAStates} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestPlainErrorBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "database is locked", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c := NewClient([]string{srv.URL}, "t", nil, nil)
	_, err := c.Heartbeat(context.Background(), Heartbeat{Host: "h"})
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 503 {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "heartbeat") || !strings.Contains(err.Error(), "database is locked") {
		t.Errorf("error %q lacks the operation or the body", err)
	}
}

func TestReportHAStates(t *testing.T) {
	var got HAStateReport
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != PathHAStates {
			t.Errorf("request %s %s", r.Method, r.URL.Path)
		}
		json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c := NewClient([]string{srv.URL}, "t", nil, nil)
	want := HAStateReport{Host: "h", States: map[string]string{"r1": HAActive, "r2": HAStandby}}
	if err := c.ReportHAStates(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if got.Host != "h" || len(got.States) != 2 || got.States["r1"] != HAActive || got.States["r2"] != HAStandby {
		t.Errorf("server got %+v", got)
	}
}

func TestTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := NewClient([]string{url}, "t", nil, nil)
	_, err := c.Heartbeat(context.Background(), Heartbeat{Host: "h"})
	if err == nil || !strings.Contains(err.Error(), "heartbeat") {
		t.Fatalf("err = %v, want a heartbeat connection error", err)
	}
	var se *StatusError
	if errors.As(err, &se) {
		t.Errorf("a connection error is not a StatusError: %v", err)
	}
}

func TestContextCancelsLongPoll(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c := NewClient([]string{srv.URL}, "t", nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := c.WaitState(ctx, "h", "", time.Minute)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitState did not return after cancel")
	}
}

// A server that cannot be reached or answers 5xx is passed over for the
// next within the same call, and the client stays with the one that
// answered; a 4xx is the answer, not a reason to move.
func TestClientMovesToTheNextServer(t *testing.T) {
	hits := map[string]int{}
	handler := func(name string, status int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[name]++
			w.WriteHeader(status)
		})
	}
	dead := httptest.NewServer(handler("dead", 204))
	deadURL := dead.URL
	dead.Close() // connection refused from now on
	unavailable := httptest.NewServer(handler("unavailable", http.StatusServiceUnavailable))
	defer unavailable.Close()
	ok := httptest.NewServer(handler("ok", http.StatusNoContent))
	defer ok.Close()

	c := NewClient([]string{deadURL, unavailable.URL, ok.URL}, "t", nil, nil)
	ctx := context.Background()
	if err := c.ReportHAStates(ctx, HAStateReport{Host: "h", States: map[string]string{"r": HAActive}}); err != nil {
		t.Fatalf("report with one server up: %v", err)
	}
	if c.Server() != ok.URL || hits["unavailable"] != 1 || hits["ok"] != 1 {
		t.Fatalf("server in use %s, hits %v", c.Server(), hits)
	}
	// The next call goes straight to the server that answered.
	if err := c.ReportHAStates(ctx, HAStateReport{Host: "h"}); err != nil {
		t.Fatal(err)
	}
	if hits["unavailable"] != 1 || hits["ok"] != 2 {
		t.Fatalf("second call: hits %v, want the working server only", hits)
	}

	forbidden := httptest.NewServer(handler("forbidden", http.StatusForbidden))
	defer forbidden.Close()
	c = NewClient([]string{forbidden.URL, ok.URL}, "t", nil, nil)
	err := c.ReportHAStates(ctx, HAStateReport{Host: "h"})
	if !IsStatus(err, http.StatusForbidden) || hits["ok"] != 2 {
		t.Fatalf("403: err %v, hits %v; want the 403 and no other server asked", err, hits)
	}

	// Every server down: the last one's error.
	c = NewClient([]string{deadURL, unavailable.URL}, "t", nil, nil)
	if err := c.ReportHAStates(ctx, HAStateReport{Host: "h"}); !IsStatus(err, http.StatusServiceUnavailable) {
		t.Fatalf("all down: err %v, want the last server's 503", err)
	}
}
