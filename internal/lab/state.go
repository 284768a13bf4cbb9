package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// stateFile is the name of the lab's state file in its directory.
const stateFile = "lab.json"

// State is what `lab up` records in <dir>/lab.json, so that later commands
// (status, failover, down — also after a crash of the lab command) find the
// lab's processes and settings. Namespaces are not recorded: their names
// derive from the lab name.
type State struct {
	Name      string    `json:"name"`
	Dir       string    `json:"dir"`
	Binary    string    `json:"binary"`
	CreatedAt time.Time `json:"created_at"`
	Dataplane string    `json:"dataplane"`
	// HADriver is the lab's --ha-driver as given ("native",
	// "net1=keepalived,net2=native"); HADrivers the driver it gives each
	// node (ParseHADrivers), nodes without one keeping the agent's default.
	HADriver  string            `json:"ha_driver,omitempty"`
	HADrivers map[string]string `json:"ha_drivers,omitempty"`
	AdvertInt string            `json:"ha_vrrp_advert_int,omitempty"`
	// HealthCheckInterval is the network nodes' --ha-vrrp-health-check-interval.
	HealthCheckInterval string `json:"ha_vrrp_health_check_interval,omitempty"`
	// ConntrackSync is the network nodes' --ha-conntrack-sync ("": the agent's default).
	ConntrackSync string `json:"ha_conntrack_sync,omitempty"`
	AgentDownTime int    `json:"agent_down_time"`
	// MinAgentsPerRouter is the server's min_l3_agents_per_router (0: 2).
	MinAgentsPerRouter int `json:"min_l3_agents_per_router,omitempty"`
	// HARoutersPerNetwork is the server's l3_ha_routers_per_network (0: its
	// default).
	HARoutersPerNetwork int    `json:"l3_ha_routers_per_network,omitempty"`
	ServerURL           string `json:"server_url"`
	// ComputeAgentDisabled is set when the agent binary did not accept
	// --agent-mode dvr: the compute node then runs a legacy agent that the
	// lab set admin_state_up=false so that no router is scheduled on it.
	ComputeAgentDisabled bool `json:"compute_agent_disabled,omitempty"`
	// Keystone is set when the lab runs with Keystone (lab up --keystone).
	Keystone *LabKeystone `json:"keystone,omitempty"`
	// Processes are the daemons the lab started.
	Processes []Process `json:"processes"`
}

// Process is one daemon of the lab. PID alone is never trusted: a process is
// the lab's only while its /proc/<pid>/cmdline equals Argv and its start
// time equals StartTime (clock ticks after boot, /proc/<pid>/stat field 22).
type Process struct {
	Name      string   `json:"name"` // "server", "agent-net1", ...
	Node      string   `json:"node"` // node whose namespace it runs in
	Namespace string   `json:"namespace"`
	PID       int      `json:"pid"`
	StartTime uint64   `json:"start_time"`
	Argv      []string `json:"argv"`
	Log       string   `json:"log"`
}

// statePath is the state file of a lab directory.
func statePath(dir string) string { return filepath.Join(dir, stateFile) }

// LoadState reads <dir>/lab.json. A missing file is (nil, nil).
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &st, nil
}

// Save writes the state file atomically (temporary file and rename), so a
// crash never leaves half a file.
func (s *State) Save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, stateFile+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(append(b, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), statePath(s.Dir)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// haDriverOf is the --ha-driver of node's agent ("": the agent's default).
// A state file without ha_drivers (an older lab) derives it from ha_driver.
func (s *State) haDriverOf(node string) string {
	if s.HADrivers != nil {
		return s.HADrivers[node]
	}
	drivers, err := ParseHADrivers(s.HADriver)
	if err != nil {
		return s.HADriver // passed on as it is; the agent judges it
	}
	return drivers[node]
}

// process returns the recorded process called name.
func (s *State) process(name string) (Process, bool) {
	for _, p := range s.Processes {
		if p.Name == name {
			return p, true
		}
	}
	return Process{}, false
}

// daemons is how many processes a complete lab runs: the server, an agent
// per node and, with Keystone, its uWSGI master.
func (s *State) daemons() int {
	n := 1 + len(Nodes)
	if s.Keystone != nil {
		n++
	}
	return n
}

// setProcess records p, replacing a process of the same name.
func (s *State) setProcess(p Process) {
	for i := range s.Processes {
		if s.Processes[i].Name == p.Name {
			s.Processes[i] = p
			return
		}
	}
	s.Processes = append(s.Processes, p)
}
