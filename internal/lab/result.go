package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is the outcome of `lab failover`; `--json` prints it as one object.
type Result struct {
	Lab        string `json:"lab"`
	Fault      string `json:"fault"`
	RouterID   string `json:"router_id"`
	GatewayIP  string `json:"gateway_ip"`
	FloatingIP string `json:"floating_ip"`
	InstanceIP string `json:"instance_ip"`
	PingTarget string `json:"ping_target"`
	// MasterBefore and MasterAfter are the nodes whose router namespace
	// held the gateway address (the kernel's view) before the fault and after
	// the failover. When no other node took over, MasterAfter lists who holds
	// it at the end (possibly MasterBefore, possibly nobody).
	MasterBefore string `json:"master_before"`
	MasterAfter  string `json:"master_after"`
	// APIMasterBefore and APIMasterAfter are the hosts the API showed with
	// ha_state active.
	APIMasterBefore string `json:"api_master_before"`
	APIMasterAfter  string `json:"api_master_after"`
	// FailoverSeconds runs from the fault to another node holding the
	// gateway address (polled every 2 ms); null when none did within the
	// timeout.
	FailoverSeconds *float64 `json:"failover_seconds"`
	// APIFailoverSeconds runs from the fault to the API showing another host
	// active (polled every 100 ms); null when it did not within the timeout.
	APIFailoverSeconds *float64 `json:"api_failover_seconds"`
	PingsSent          int      `json:"pings_sent"`
	PingsReceived      int      `json:"pings_received"`
	PingsLost          int      `json:"pings_lost"`
	// PingIntervalMS is the interval asked of ping (-i); the measured one
	// is PingIntervalMeasuredMS (see PingSummary.MeasuredInterval).
	PingIntervalMS         float64 `json:"ping_interval_ms"`
	PingIntervalMeasuredMS float64 `json:"ping_interval_measured_ms"`
	// LongestGapSeconds is the longest time between two consecutive replies.
	LongestGapSeconds float64 `json:"longest_gap_seconds"`
	// PingsResumed: a reply arrived after the new master took over (after
	// the fault when none did).
	PingsResumed bool `json:"pings_resumed"`
	// KernelChanges counts the changes of the set of nodes holding the
	// gateway address from the fault to the end of the run (polled every
	// 2 ms): 0 means the master kept the router's addresses throughout.
	KernelChanges       int            `json:"kernel_changes"`
	FloatingIPReachable bool           `json:"floating_ip_reachable"`
	FaultDetail         string         `json:"fault_detail"`
	FaultAt             time.Time      `json:"fault_at"`
	AgentsBefore        []AgentHAState `json:"agents_before"`
	AgentsAfter         []AgentHAState `json:"agents_after"`
	// HistoryAfter is the router's newest HA transitions at the end, with
	// their reasons (oldest first).
	HistoryAfter []Transition `json:"history_after,omitempty"`
	// TCPLoose is the routers' nf_conntrack_tcp_loose the run set ("": the
	// kernel's, 1).
	TCPLoose string `json:"tcp_loose,omitempty"`
	// Flows are the connections run across the fault (--flows), in the
	// order of FlowKinds.
	Flows []FlowResult `json:"flows,omitempty"`
	// APIStateChanges counts, with the faults that must move nothing, the
	// API polls (every 100 ms) that did not show exactly the old master
	// active.
	APIStateChanges int `json:"api_state_changes"`
	// AgentsCPUSecondsBefore and During (clock-jump): the CPU time the
	// network nodes' agents used over a quiet window before the fault and
	// over the watch after it, of the same length.
	AgentsCPUSecondsBefore float64  `json:"agents_cpu_seconds_before,omitempty"`
	AgentsCPUSecondsDuring float64  `json:"agents_cpu_seconds_during,omitempty"`
	Dataplane              string   `json:"dataplane"`
	HADriver               string   `json:"ha_driver,omitempty"`
	AdvertInt              string   `json:"ha_vrrp_advert_int,omitempty"`
	Notes                  []string `json:"notes,omitempty"`
}

// AgentHAState is one agent hosting the router, as the API shows it.
type AgentHAState struct {
	Host    string `json:"host"`
	AgentID string `json:"agent_id"`
	Alive   bool   `json:"alive"`
	HAState string `json:"ha_state"`
}

// WriteJSON prints the result as one JSON object.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the result for people: the agents hosting the router
// with their ha_state before and after, then the measurements.
func (r *Result) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "HA router %s, fault %s\n\n", r.RouterID, r.Fault)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tHA_STATE BEFORE\tHA_STATE AFTER\tALIVE AFTER\tGATEWAY BEFORE\tGATEWAY AFTER")
	for _, h := range r.hosts() {
		before, after := find(r.AgentsBefore, h), find(r.AgentsAfter, h)
		alive := "?"
		if after != nil {
			alive = aliveMark(after.Alive)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h, stateOf(before), stateOf(after), alive,
			mark(listHas(r.MasterBefore, h)), mark(listHas(r.MasterAfter, h)))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("fault", "%s (%s)", r.Fault, r.FaultDetail)
	row("master before", "%s", orNone(r.MasterBefore))
	row("master after", "%s", orNone(r.MasterAfter))
	row("failover", "%s", secondsText(r.FailoverSeconds, "no other node took over"))
	row("failover seen by the API", "%s", secondsText(r.APIFailoverSeconds, "not within the timeout"))
	row("pings sent", "%d (from %s to %s every %g ms, measured %.1f ms)", r.PingsSent, r.InstanceIP, r.PingTarget, r.PingIntervalMS, r.PingIntervalMeasuredMS)
	row("pings lost", "%d", r.PingsLost)
	row("longest gap", "%.3f s", r.LongestGapSeconds)
	row("gateway holder changes", "%d", r.KernelChanges)
	if r.Fault == FaultAgentRestart || r.Fault == FaultClockJump {
		row("API polls not showing the master", "%d", r.APIStateChanges)
	}
	if r.Fault == FaultClockJump {
		row("agents' CPU", "%.2f s over the watch, %.2f s over as long before the fault", r.AgentsCPUSecondsDuring, r.AgentsCPUSecondsBefore)
	}
	row("floating IP", "%s (reachable from upstream before the fault: %v)", r.FloatingIP, r.FloatingIPReachable)
	tw.Flush()
	if len(r.Flows) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		loose := r.TCPLoose
		if loose == "" {
			loose = "kernel default"
		}
		fmt.Fprintf(tw, "CONNECTION (tcp_loose %s)\tSURVIVED\tRESET\tMESSAGES\tLOST\tLONGEST GAP\tDETAIL\n", loose)
		for _, f := range r.Flows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.3f s\t%s\n", f.Kind, mark(f.Survived), mark(f.Reset), f.Messages, f.Lost, f.LongestGapSeconds, f.Detail)
		}
		tw.Flush()
	}
	if len(r.HistoryAfter) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "AT\tHOST\tFROM\tTO\tREASON")
		for _, h := range r.HistoryAfter {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.At, h.Host, h.From, h.To, orNone(h.Reason))
		}
		tw.Flush()
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

func (r *Result) hosts() []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range [][]AgentHAState{r.AgentsBefore, r.AgentsAfter} {
		for _, a := range l {
			if !seen[a.Host] {
				seen[a.Host] = true
				out = append(out, a.Host)
			}
		}
	}
	return out
}

func find(l []AgentHAState, host string) *AgentHAState {
	for i := range l {
		if l[i].Host == host {
			return &l[i]
		}
	}
	return nil
}

func stateOf(a *AgentHAState) string {
	if a == nil {
		return "-"
	}
	if a.HAState == "" {
		return "?"
	}
	return a.HAState
}

func listHas(list, h string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == h {
			return true
		}
	}
	return false
}

func mark(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func secondsText(s *float64, none string) string {
	if s == nil {
		return none
	}
	return fmt.Sprintf("%.3f s", *s)
}
