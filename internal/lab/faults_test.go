package lab

import (
	"slices"
	"testing"
	"time"
)

func TestFailoverOptionsAgentRestart(t *testing.T) {
	o := FailoverOptions{Options: Options{Binary: "/bin/true"}, Fault: FaultAgentRestart}
	if err := o.setDefaults(); err != nil {
		t.Fatalf("--fault agent-restart refused: %v", err)
	}
	if o.Timeout != DefaultRestartWatch {
		t.Errorf("agent-restart watches %s by default, want %s", o.Timeout, DefaultRestartWatch)
	}
	o = FailoverOptions{Options: Options{Binary: "/bin/true"}, Fault: FaultAgentRestart, Timeout: 3 * time.Second}
	if err := o.setDefaults(); err != nil || o.Timeout != 3*time.Second {
		t.Errorf("timeout %s (%v), want the one given", o.Timeout, err)
	}
	o = FailoverOptions{Options: Options{Binary: "/bin/true"}, Fault: FaultNode}
	if err := o.setDefaults(); err != nil || o.Timeout != 30*time.Second {
		t.Errorf("node fault: timeout %s (%v), want 30s", o.Timeout, err)
	}
	// Faults are the faults that move mastership (the end-to-end test
	// expects a failover from each); AllFaults adds the restart and the
	// clock jump.
	if slices.Contains(Faults, FaultAgentRestart) || slices.Contains(Faults, FaultClockJump) {
		t.Errorf("Faults = %v: agent-restart and clock-jump move no master", Faults)
	}
	if all := AllFaults(); !slices.Equal(all, []string{FaultHALink, FaultNode, FaultAgentStop, FaultSwitchover, FaultAgentRestart, FaultClockJump}) {
		t.Errorf("AllFaults() = %v", all)
	}
	all := AllFaults()
	all[0] = "x"
	if Faults[0] != FaultHALink {
		t.Error("AllFaults shares its array with Faults")
	}
}
