package oslo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/rabbitlocal"
)

// The package's integration tests share one private RabbitMQ, started in
// TestMain (about 10 s).
var (
	testBroker    *rabbitlocal.Server
	testBrokerErr error
)

func TestMain(m *testing.M) {
	code := func() int {
		if err := rabbitlocal.Installed(); err != nil {
			testBrokerErr = err
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "oslo-test-rabbit-")
		if err != nil {
			testBrokerErr = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		logLevel := slog.LevelWarn
		if os.Getenv("OSLO_TEST_VERBOSE") != "" {
			logLevel = slog.LevelDebug
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
		testBroker, testBrokerErr = rabbitlocal.Start(ctx, dir, log)
		if testBroker != nil {
			defer testBroker.Stop()
		}
		return m.Run()
	}()
	os.Exit(code)
}

// broker returns the shared RabbitMQ, skipping the test when
// rabbitmq-server is not installed (failing with L3HA_TEST_REQUIRE_ALL=1).
func broker(t *testing.T) *rabbitlocal.Server {
	t.Helper()
	if testBroker != nil {
		return testBroker
	}
	if errors.Is(testBrokerErr, rabbitlocal.ErrNotInstalled) && os.Getenv("L3HA_TEST_REQUIRE_ALL") != "1" {
		t.Skipf("skipping integration test: %v (apt-get install rabbitmq-server)", testBrokerErr)
	}
	t.Fatalf("no RabbitMQ for the test: %v", testBrokerErr)
	return nil
}

// recLog is a slog handler that logs to the test and records messages.
type recLog struct {
	mu   *sync.Mutex
	t    *testing.T
	done *bool
	msgs *[]string
	pre  string
}

func newRecLog(t *testing.T) (*slog.Logger, func() []string) {
	var mu sync.Mutex
	done := false
	var msgs []string
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	h := &recLog{mu: &mu, t: t, done: &done, msgs: &msgs}
	return slog.New(h), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), msgs...)
	}
}

func (h *recLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *recLog) WithGroup(string) slog.Handler            { return h }
func (h *recLog) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	for _, a := range as {
		c.pre += " " + a.String()
	}
	return &c
}
func (h *recLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s%s", r.Level, r.Message, h.pre)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.msgs = append(*h.msgs, b.String())
	if !*h.done {
		h.t.Log(b.String())
	}
	return nil
}

// waitLog waits until a recorded log line contains all of parts.
func waitLog(t *testing.T, logs func() []string, d time.Duration, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, l := range logs() {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line containing %q within %v", parts, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dial opens a transport to the test broker with fast reconnects.
func dial(t *testing.T, log *slog.Logger) *Transport {
	t.Helper()
	b := broker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr, err := Dial(ctx, Config{TransportURL: b.TransportURL(), Log: log,
		RetryInterval: 100 * time.Millisecond, RetryBackoff: 200 * time.Millisecond, RetryMax: time.Second,
		ReconnectDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// topic returns a topic name unique to the test.
func topic(t *testing.T) string {
	return "t_" + newID()[:12]
}
