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
// namespaces: no reset, in order, and no longer silent than the failover
// plus 100 ms (a tcp-many connection, which speaks every 500 ms, its
// interval and TCP's backoff more, see manyLimit). Without the sync the strict half breaks: ctsync's kernel
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
				for _, f := range r.Flows {
					limit := failover + gapSlack
					if f.Kind == "tcp-many" {
						limit = manyLimit(failover)
					}
					gap := time.Duration(f.LongestGapSeconds * float64(time.Second))
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
// the fault may be that old; a message lost in the outage is retransmitted
// at 0.2, 0.6, 1.4, 3.0 s... after it was sent (TCP's 200 ms minimum RTO,
// doubling), and the first retransmission after the path is back, at f,
// comes before 2f + 0.2 s. The 10 ms streams need no such bound: new data
// right after the takeover repairs them at once.
func manyLimit(f time.Duration) time.Duration {
	return defaultManyInterval + 2*f + 200*time.Millisecond + gapSlack
}
