package agentapi

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
)

// TestHAStateReportReasonsAreOptional: a report without reasons (every
// agent before them) keeps its wire shape both ways, and reasons travel
// when there are some.
func TestHAStateReportReasonsAreOptional(t *testing.T) {
	for _, tc := range []struct {
		name, wire string
		reasons    map[string]string
	}{
		{name: "old agent", wire: `{"host":"net1","states":{"r1":"active"}}`},
		{name: "with reasons", wire: `{"host":"net1","states":{"r1":"active"},"reasons":{"r1":"peer_lost"}}`, reasons: map[string]string{"r1": ReasonPeerLost}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rep HAStateReport
			if err := json.Unmarshal([]byte(tc.wire), &rep); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(rep.Reasons, tc.reasons) || rep.States["r1"] != HAActive {
				t.Errorf("decoded %+v", rep)
			}
			b, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b); got != tc.wire {
				t.Errorf("encoded %s, want %s", got, tc.wire)
			}
		})
	}
}

// TestKnownReasons: exactly the reasons of the history are known.
func TestKnownReasons(t *testing.T) {
	want := "startup peer_lost peer_resigned switchover health_check split_brain admin_down restart_adopted"
	if got := strings.Join(Reasons, " "); got != want {
		t.Errorf("Reasons = %s, want %s", got, want)
	}
	for _, r := range Reasons {
		if !KnownReason(r) {
			t.Errorf("%s not known", r)
		}
	}
	for _, r := range []string{"", "master_down", "Startup", "fault"} {
		if KnownReason(r) {
			t.Errorf("%q known", r)
		}
	}
}
