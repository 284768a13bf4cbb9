package lab

// The benchmarks' output: the failover result as a table or JSON, and
// results.json (written, read, and printed as Markdown tables).

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteJSON prints the result as one JSON object.
func (r *BenchFailoverResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the result for people.
func (r *BenchFailoverResult) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "%d HA router(s), driver %s, advert %gs (VRRPv%d), fault %s: %s → %s\n\n",
		r.Routers, r.Driver, r.AdvertInt, r.VRRPVersion, r.Fault, orNone(r.MasterBefore), orNone(r.MasterAfter))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VIEW\tMOVED\tP50\tP95\tMAX\tALL MOVED")
	for _, v := range []struct {
		name string
		s    BenchStats
	}{{"vip (kernel)", r.VIP}, {"data plane", r.Dataplane}, {"api", r.API}} {
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\n", v.name, v.s.Moved, r.Routers,
			secs(v.s.P50), secs(v.s.P95), secs(v.s.Max), secs(v.s.AllMoved))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nprobes: %d sent after the fault, %d lost (each router every %g ms)\n", r.ProbesSent, r.LostProbes, r.ProbeIntervalMS)
	fmt.Fprintf(w, "kernel input backlog drops: %d during the setup, %d after the fault; routers that flapped: %d\n", r.SetupBacklogDrops, r.BacklogDrops, r.Flaps)
	fmt.Fprintf(w, "api poll round: %.0f ms; fault: %s\n", r.APIPollRoundMS, r.FaultDetail)
	if r.ProfileFile != "" {
		fmt.Fprintf(w, "profile: %s\n", r.ProfileFile)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	return nil
}

func secs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f s", *v)
}

// writeJSONFile writes v to path atomically.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadBenchResults reads a results.json.
func ReadBenchResults(path string) (*BenchResults, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r BenchResults
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// WriteTable prints the comparison as Markdown tables.
func (r *BenchResults) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "Machine: %s; %d MiB; %s; load average at start %s; %.0f s in all.\n\n",
		m.Summary(), m.MemoryMiB, m.GoVersion, m.LoadAvg, r.DurationS)
	if len(r.Failover) > 0 {
		fmt.Fprintln(w, "Failover (seconds after the fault; p50 / max / all moved):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| routers | driver | advert | routers per HA net | vip (kernel) | data plane | api | lost probes | probe interval |")
		fmt.Fprintln(w, "|---:|---|---:|---:|---|---|---|---:|---:|")
		for _, f := range r.Failover {
			if f.Error != "" {
				fmt.Fprintf(w, "| %d | %s | %gs | %d | error: %s |  |  |  |  |\n", f.Routers, f.Driver, f.AdvertInt, f.RoutersPerNetwork, strings.ReplaceAll(f.Error, "\n", " "))
				continue
			}
			fmt.Fprintf(w, "| %d | %s | %gs (v%d) | %d | %s | %s | %s | %d of %d | %g ms |\n", f.Routers, f.Driver, f.AdvertInt, f.VRRPVersion, f.RoutersPerNetwork,
				triple(f.VIP), triple(f.Dataplane), triple(f.API), f.LostProbes, f.ProbesSent, f.ProbeIntervalMS)
		}
		fmt.Fprintln(w)
	}
	if len(r.Converge) > 0 {
		fmt.Fprintln(w, "Converge (seconds after the agent's start until all routers …; memory and CPU after):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| routers | driver | advert | routers per HA net | namespaces | VRRP running | master | API active | agent RSS (peak) | agent CPU to converge / after | keepalived RSS | keepalived CPU to converge / after |")
		fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, c := range r.Converge {
			if c.Error != "" {
				fmt.Fprintf(w, "| %d | %s | %gs | %d | error: %s |  |  |  |  |  |  |  |\n", c.Routers, c.Driver, c.AdvertInt, c.RoutersPerNetwork, strings.ReplaceAll(c.Error, "\n", " "))
				continue
			}
			ka, kacpu := "-", "-"
			if c.Keepalived != nil {
				ka = fmt.Sprintf("%.0f MiB (%d procs)", float64(c.Keepalived.RSSKB)/1024, c.Keepalived.Processes)
				kacpu = fmt.Sprintf("%.1f s / %.1f%%", c.Keepalived.CPUS, c.Keepalived.IdleCPUPct)
			}
			fmt.Fprintf(w, "| %d | %s | %gs | %d | %s | %s | %s | %s | %.0f MiB (%.0f) | %.1f s / %.1f%% | %s | %s |\n", c.Routers, c.Driver, c.AdvertInt, c.RoutersPerNetwork,
				secs(c.NamespacesS), secs(c.VRRPS), secs(c.MasterS), secs(c.APIS),
				float64(c.Agent.RSSKB)/1024, float64(c.Agent.HWMKB)/1024, c.Agent.CPUS, c.Agent.IdleCPUPct, ka, kacpu)
		}
		fmt.Fprintln(w)
	}
	return nil
}

func triple(s BenchStats) string {
	short := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatFloat(*v, 'f', 3, 64)
	}
	return fmt.Sprintf("%s / %s / %s", short(s.P50), short(s.Max), short(s.AllMoved))
}
