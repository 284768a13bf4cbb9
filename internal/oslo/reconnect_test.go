package oslo

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestRabbitMQRestartMidTest restarts the broker under connected clients
// and servers: the in-flight call fails with ErrConnectionLost, both
// transports reconnect and say so, the servers consume their (redeclared)
// queues again, and calls, casts and fanout casts work again; a call made
// while the broker is down goes through once it is back.
func TestRabbitMQRestartMidTest(t *testing.T) {
	b := broker(t)
	log, _ := newRecLog(t)
	srvT := dial(t, log)
	cliT := dial(t, log)
	tp := topic(t)

	got := make(chan received, 16)
	ep := echoEndpoint("h1", got)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ep.Methods["block"] = func(ctx context.Context, _ map[string]any, _ json.RawMessage) (any, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "late", nil
	}
	startServer(t, srvT, Target{Topic: tp, Server: "h1"}, ep)
	// A second server on the client's own transport: a call made while
	// disconnected then finds its queues redeclared, since a transport
	// redeclares its consumers before it publishes again.
	got2 := make(chan received, 16)
	startServer(t, cliT, Target{Topic: tp + "_local", Server: "h2"}, echoEndpoint("h2", got2))
	cl := NewClient(cliT)
	defer cl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := cl.Call(ctx, Target{Topic: tp}, "echo", nil); err != nil {
		t.Fatalf("call before restart: %v", err)
	}
	srvRe, stopSrv := srvT.NotifyReconnect()
	defer stopSrv()
	cliRe, stopCli := cliT.NotifyReconnect()
	defer stopCli()

	// A call in flight when the broker goes away.
	inflight := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, Target{Topic: tp}, "block", nil)
		inflight <- err
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("blocking handler never started")
	}

	restarted := make(chan error, 1)
	go func() { restarted <- b.Restart(ctx) }()

	select {
	case err := <-inflight:
		if !errors.Is(err, ErrConnectionLost) {
			t.Fatalf("in-flight call: %v, want ErrConnectionLost", err)
		}
		t.Logf("in-flight call failed as expected: %v", err)
	case <-ctx.Done():
		t.Fatal("in-flight call did not fail")
	}
	close(release)

	// Wait until the client's transport knows it is disconnected, then
	// call: the call waits for the broker and the redeclared queues.
	for cliT.Connected() {
		select {
		case <-ctx.Done():
			t.Fatal("client transport never noticed the restart")
		case <-time.After(10 * time.Millisecond):
		}
	}
	duringDown := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, Target{Topic: tp + "_local", Server: "h2"}, "echo", nil)
		duringDown <- err
	}()

	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan struct{}{"server": srvRe, "client": cliRe} {
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s transport did not report a reconnect", name)
		}
	}
	if err := <-duringDown; err != nil {
		t.Fatalf("call made while RabbitMQ was down: %v", err)
	}

	for len(got) > 0 {
		<-got
	}
	res, err := cl.Call(ctx, Target{Topic: tp, Server: "h1"}, "echo", map[string]int{"n": 2})
	if err != nil {
		t.Fatalf("call after restart: %v", err)
	}
	var out struct{ Server string }
	if json.Unmarshal(res, &out); out.Server != "h1" {
		t.Errorf("result %s", res)
	}
	if err := cl.Cast(ctx, Target{Topic: tp, Fanout: true}, "note", nil); err != nil {
		t.Fatalf("fanout cast after restart: %v", err)
	}
	rs := waitReceived(t, got, 2) // the echo and the fanout note
	if rs[1].method != "note" {
		t.Errorf("received %+v", rs)
	}
}

// TestServerRedeclaresDeletedQueue deletes a server's queue under it (the
// broker cancels the consumer): the server redeclares it and serves again.
func TestServerRedeclaresDeletedQueue(t *testing.T) {
	log, logs := newRecLog(t)
	tr := dial(t, log)
	tp := topic(t)
	got := make(chan received, 16)
	startServer(t, tr, Target{Topic: tp, Server: "h"}, echoEndpoint("h", got))
	cl := NewClient(tr)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	if _, err := ch.QueueDelete(tp+".h", false, false, false); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, time.Minute, "consumer stopped, redeclaring", "queue="+tp+".h")
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.Call(cctx, Target{Topic: tp, Server: "h"}, "echo", nil)
		ccancel()
		if err == nil {
			break
		}
		if !errors.Is(err, ErrTimeout) || ctx.Err() != nil {
			t.Fatalf("call after queue deletion: %v", err)
		}
	}
}
