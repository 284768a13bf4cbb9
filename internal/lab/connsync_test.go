package lab

import (
	"fmt"
	"testing"
	"time"
)

// gapSlack is what a connection's longest silence may exceed the failover
// by (issue 13: the failover time plus 100 ms).
const gapSlack = 100 * time.Millisecond

// TestConnectionsSurviveFailoverWithConntrackSync is issue 13's flow
// matrix with the agents' conntrack sync on (their default): every kind
// of connection (FlowKinds: TCP client-first and server-push through SNAT,
// 1000 TCP connections, UDP keeping its SNAT port, TCP from upstream to the
// floating IP, an idle TCP connection) survives each fault that moves the
// master — a node fault, the ha- link, a graceful agent stop and a
// switchover — with nf_conntrack_tcp_loose 1 and 0 in the router
// namespaces: no reset, in order, and the path back within the failover
// plus 100 ms — the UDP flow, which has no backoff of its own, must be
// silent no longer than that, and so must the 10 ms TCP streams, unless
// their own retransmission backoff explains the rest (tcpBackoffLimit;
// logged: it is the endpoints' timer, not the router). A tcp-many
// connection speaks every 500 ms: its interval and TCP's backoff more, see
// manyLimit. Without the sync the strict half breaks: ctsync's kernel
// tests show that side.
func TestConnectionsSurviveFailoverWithConntrackSync(t *testing.T) {
	needE2E(t)
	name, dir := throwawayLab(t, "c")
	mustLab(t, name, dir, "up", "--ha-driver", "native")
	for _, loose := range []string{"1", "0"} {
		for _, fault := range []string{FaultHALink, FaultAgentStop, FaultSwitchover, FaultNode} {
			t.Run(fmt.Sprintf("tcp_loose=%s/%s", loose, fault), func(t *testing.T) {
				r := runLabFailoverIn(t, name, dir, "--fault", fault, "--flows", "--tcp-loose", loose)
				if r.FailoverSeconds == nil {
					t.Fatalf("no failover: %+v", r)
				}
				failover := time.Duration(*r.FailoverSeconds * float64(time.Second))
				if len(r.Flows) != len(FlowKinds) {
					t.Fatalf("%d connection results, want %d: %+v", len(r.Flows), len(FlowKinds), r.Flows)
				}
				pathBack := false // the UDP flow came back within the failover + 100 ms
				for _, f := range r.Flows {
					if f.Kind == "udp" {
						pathBack = time.Duration(f.LongestGapSeconds*float64(time.Second)) <= failover+gapSlack
					}
				}
				for _, f := range r.Flows {
					limit := failover + gapSlack
					gap := time.Duration(f.LongestGapSeconds * float64(time.Second))
					switch f.Kind {
					case "tcp-many":
						limit = manyLimit(failover)
					case "tcp-client", "tcp-push", "tcp-fip":
						if gap > limit && pathBack && gap <= tcpBackoffLimit(failover) {
							t.Logf("%s silent %.3f s: the path was back at %.3f s + 100 ms (UDP), the rest is TCP's retransmission backoff", f.Kind, f.LongestGapSeconds, *r.FailoverSeconds)
							limit = tcpBackoffLimit(failover)
						}
					}
					t.Logf("%-10s survived=%v reset=%v messages=%d lost=%d longest gap %.3f s (failover %.3f s) %s",
						f.Kind, f.Survived, f.Reset, f.Messages, f.Lost, f.LongestGapSeconds, *r.FailoverSeconds, f.Detail)
					if !f.Survived || f.Reset || f.OutOfOrder > 0 || f.SourcePortChanged || f.Broken > 0 {
						t.Errorf("%s did not survive: %+v", f.Kind, f)
					}
					if gap > limit {
						t.Errorf("%s silent for %.3f s, more than the failover %.3f s + %s", f.Kind, f.LongestGapSeconds, *r.FailoverSeconds, limit-failover)
					}
				}
			})
		}
	}
}

// manyLimit bounds a tcp-many connection's silence across a failover of
// length f. It speaks every defaultManyInterval, so its last message before
// the fault may be that old, and a message lost in the outage waits for
// TCP's backoff.
func manyLimit(f time.Duration) time.Duration {
	return defaultManyInterval + tcpBackoffLimit(f)
}

// tcpBackoffLimit is when, after an outage of length f, a TCP sender's
// first retransmission after the path is back has gone out, plus gapSlack:
// retransmissions go at 0.2, 0.6, 1.4, 3.0 s... (TCP's 200 ms minimum RTO,
// doubling), so the first one after f comes before 2f + 0.2 s.
func tcpBackoffLimit(f time.Duration) time.Duration {
	return 2*f + 200*time.Millisecond + gapSlack
}
