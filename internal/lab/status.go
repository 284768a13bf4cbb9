package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// StatusReport is what `lab status` shows.
type StatusReport struct {
	Name       string          `json:"name"`
	Dir        string          `json:"dir"`
	Up         bool            `json:"up"` // every namespace exists and every process runs
	Dataplane  string          `json:"dataplane,omitempty"`
	Namespaces []string        `json:"namespaces"`
	Missing    []string        `json:"missing_namespaces"`
	Processes  []ProcessStatus `json:"processes"`
	ServerURL  string          `json:"server_url"`
	APIError   string          `json:"api_error,omitempty"`
	Agents     []AgentStatus   `json:"agents"`
	Routers    []RouterStatus  `json:"routers"`
	Notes      []string        `json:"notes,omitempty"`
}

// ProcessStatus is one recorded daemon.
type ProcessStatus struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	Namespace string `json:"namespace"`
	Running   bool   `json:"running"`
	Log       string `json:"log"`
}

// AgentStatus is an agent as the API shows it.
type AgentStatus struct {
	ID           string `json:"id"`
	Host         string `json:"host"`
	Mode         string `json:"agent_mode"`
	Alive        bool   `json:"alive"`
	AdminStateUp bool   `json:"admin_state_up"`
}

// RouterStatus is a router with the ha_state of each hosting agent.
type RouterStatus struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	HA        bool              `json:"ha"`
	GatewayIP string            `json:"gateway_ip,omitempty"`
	HAStates  map[string]string `json:"ha_states"` // host → active|standby|unknown
}

// Status inspects the lab: namespaces, recorded processes and, when the
// server answers, agents and routers.
func Status(ctx context.Context, o Options) (*StatusReport, error) {
	o.Binary = "-"
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if err := requireRoot(); err != nil {
		return nil, err
	}
	r := &StatusReport{Name: o.Name, Dir: o.Dir, ServerURL: serverURL(), Namespaces: []string{}, Missing: []string{},
		Processes: []ProcessStatus{}, Agents: []AgentStatus{}, Routers: []RouterStatus{}}
	nss, err := existingNamespaces(o.Name)
	if err != nil {
		return nil, err
	}
	r.Namespaces = append(r.Namespaces, nss...)
	have := map[string]bool{}
	for _, ns := range nss {
		have[ns] = nsExists(ns)
	}
	for _, role := range labRoles() {
		if ns := NodeNamespace(o.Name, role); !have[ns] {
			r.Missing = append(r.Missing, ns)
		}
	}
	st, err := LoadState(o.Dir)
	if err != nil {
		r.Notes = append(r.Notes, err.Error())
	}
	up := st != nil && len(r.Missing) == 0
	if st != nil {
		r.Dataplane = st.Dataplane
		if st.ComputeAgentDisabled {
			r.Notes = append(r.Notes, "the compute node runs a legacy agent with admin_state_up=false (the agent did not accept --agent-mode dvr)")
		}
		for _, p := range st.Processes {
			ps := ProcessStatus{Name: p.Name, PID: p.PID, Namespace: p.Namespace, Running: p.running(), Log: p.Log}
			up = up && ps.Running
			r.Processes = append(r.Processes, ps)
		}
		up = up && len(st.Processes) == st.daemons()
	} else if len(nss) > 0 {
		r.Notes = append(r.Notes, "no "+statePath(o.Dir)+": the lab's processes are unknown; `l3ha lab down` still removes everything")
	}
	r.Up = up
	if have[NodeNamespace(o.Name, controllerNode().Name)] {
		if st == nil {
			st = &State{Name: o.Name}
		}
		if err := r.fillAPI(ctx, st); err != nil {
			r.APIError = err.Error()
		}
	}
	return r, nil
}

func (r *StatusReport) fillAPI(ctx context.Context, st *State) error {
	api := apiFor(st)
	defer api.close()
	timeout := 5 * time.Second
	if st.Keystone != nil {
		// A password login and the server's first validation of its token,
		// on Keystone's one worker: seconds on a loaded machine.
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	agents, err := api.agents(ctx)
	if err != nil {
		return err
	}
	for _, a := range agents {
		r.Agents = append(r.Agents, AgentStatus{ID: a.ID, Host: a.Host, Mode: a.mode(), Alive: a.Alive, AdminStateUp: a.AdminStateUp})
	}
	sort.Slice(r.Agents, func(i, j int) bool { return r.Agents[i].Host < r.Agents[j].Host })
	routers, err := api.routers(ctx)
	if err != nil {
		return err
	}
	for _, rt := range routers {
		rs := RouterStatus{ID: rt.ID, Name: rt.Name, HA: rt.HA, GatewayIP: rt.gatewayIP(), HAStates: map[string]string{}}
		hosting, err := api.routerAgents(ctx, rt.ID)
		if err != nil {
			return err
		}
		for _, a := range hosting {
			rs.HAStates[a.Host] = a.haState()
		}
		r.Routers = append(r.Routers, rs)
	}
	sort.Slice(r.Routers, func(i, j int) bool { return r.Routers[i].Name+r.Routers[i].ID < r.Routers[j].Name+r.Routers[j].ID })
	return nil
}

// WriteJSON prints the report as one JSON object.
func (r *StatusReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the report for people.
func (r *StatusReport) WriteTable(w io.Writer) error {
	state := "down"
	switch {
	case r.Up:
		state = "up"
	case len(r.Namespaces) > 0 || len(r.Processes) > 0:
		state = "partly up (run `l3ha lab down` to remove it)"
	}
	fmt.Fprintf(w, "lab %q: %s (dir %s", r.Name, state, r.Dir)
	if r.Dataplane != "" {
		fmt.Fprintf(w, ", dataplane %s", r.Dataplane)
	}
	fmt.Fprintln(w, ")")
	if len(r.Namespaces) == 0 && len(r.Processes) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nnamespaces: %s\n", strings.Join(r.Namespaces, " "))
	if len(r.Missing) > 0 {
		fmt.Fprintf(w, "missing:    %s\n", strings.Join(r.Missing, " "))
	}
	if len(r.Processes) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PROCESS\tPID\tSTATE\tNAMESPACE\tLOG")
		for _, p := range r.Processes {
			s := "running"
			if !p.Running {
				s = "gone"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", p.Name, p.PID, s, p.Namespace, p.Log)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	if r.APIError != "" {
		fmt.Fprintf(w, "API %s: %s\n", r.ServerURL, r.APIError)
	} else if len(r.Agents) > 0 || len(r.Routers) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "AGENT HOST\tMODE\tALIVE\tADMIN_STATE_UP\tID")
		for _, a := range r.Agents {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", a.Host, a.Mode, aliveMark(a.Alive), a.AdminStateUp, a.ID)
		}
		tw.Flush()
		if len(r.Routers) > 0 {
			fmt.Fprintln(w)
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ROUTER\tID\tGATEWAY\tHA_STATE")
			for _, rt := range r.Routers {
				var hs []string
				for h, s := range rt.HAStates {
					hs = append(hs, h+"="+s)
				}
				sort.Strings(hs)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", rt.Name, rt.ID, rt.GatewayIP, strings.Join(hs, " "))
			}
			tw.Flush()
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

func aliveMark(b bool) string {
	if b {
		return ":-)"
	}
	return "xxx"
}
