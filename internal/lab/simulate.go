package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/server"
)

// `l3ha lab simulate` measures the control plane alone: `l3ha server` as a
// child process (its RSS read from /proc/<pid>/status), A agents running the
// real agent loops (agent.Run) with the fake data plane as goroutines of the
// simulating process, each with its own HTTP transport (its own
// connections, as separate nodes would have), and R HA routers created
// through the Neutron API by a few concurrent clients.
//
// It reports API create throughput and latency, how long after the last
// create every agent held all its routers, the scheduling balance (routers
// and masters per agent; the fake data plane makes binding index 1 the
// master, as the first keepalived to start does with nopreempt), how long a
// change (a router's name: part of every bound agent's desired state) takes
// to reach all the router's agents, and the server's RSS.
//
// Routers are spread round-robin over P projects (default one per 200
// routers, so each project's routers fit one HA network of 254 VRIDs, and
// 20000 routers make 100 HA networks); --projects 1 puts them all in one
// project (79 HA networks for 20000). max_l3_agents_per_router defaults to
// 3, Neutron's and l3ha server's default, so 20000 routers are 60000
// bindings and 60000 HA ports.

// Simulation defaults.
const (
	DefaultSimAgents         = 200
	DefaultSimRouters        = 20000
	DefaultSimConcurrency    = 8
	DefaultSimMaxAgents      = 3
	DefaultSimChanges        = 100
	DefaultSimRoutersPerProj = 200
	DefaultSimTimeout        = 20 * time.Minute
	simAgentToken            = "l3ha-simulate-agent-token"
)

// SimulateOptions configure Simulate.
type SimulateOptions struct {
	Agents      int // fake-dataplane agents (default 200)
	Routers     int // HA routers to create (default 20000)
	Concurrency int // concurrent API clients creating routers (default 8)
	// Projects the routers are spread over, round-robin (default
	// ceil(Routers/200)).
	Projects int
	// MaxAgentsPerRouter is the server's max_l3_agents_per_router (default
	// 3; 0 means every agent); min_l3_agents_per_router is 2, or 1 when
	// this is 1.
	MaxAgentsPerRouter int
	// Changes is how many router updates are timed until every agent of the
	// router applied them (default 100; negative: none).
	Changes int
	// Database is passed to the server as --database; empty: SQLite in the
	// work directory. A PostgreSQL database must be empty.
	Database string
	// Binary is the l3ha binary whose `server` subcommand is started
	// (default: this executable).
	Binary string
	// InProcess runs the server inside this process instead of as a child
	// (for profiling the whole control plane with one CPU profile; the RSS
	// reported is then that of server and agents together).
	InProcess bool
	// Dir is the work directory (server state, logs); default a new
	// temporary directory, removed at the end unless KeepDir.
	Dir     string
	KeepDir bool
	// Timeout bounds the whole run (default 20 minutes).
	Timeout time.Duration
	// CPUProfile, when set, receives a CPU profile of this process (with
	// InProcess: of server and agents together) for `go tool pprof`.
	CPUProfile string
	// Out receives progress lines (nil: discarded).
	Out io.Writer
}

// RegisterFlags declares the options on fs (the `l3ha lab simulate` flags).
func (o *SimulateOptions) RegisterFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Agents, "agents", DefaultSimAgents, "fake-dataplane agents, run in this process")
	fs.IntVar(&o.Routers, "routers", DefaultSimRouters, "HA routers to create through the API")
	fs.IntVar(&o.Concurrency, "concurrency", DefaultSimConcurrency, "concurrent API clients creating routers")
	fs.IntVar(&o.Projects, "projects", 0, "projects the routers are spread over (default one per 200 routers: one HA network each)")
	fs.IntVar(&o.MaxAgentsPerRouter, "max-agents-per-router", DefaultSimMaxAgents, "the server's max_l3_agents_per_router (0 = every agent)")
	fs.IntVar(&o.Changes, "changes", DefaultSimChanges, "router updates timed until every agent of the router applied them")
	fs.StringVar(&o.Database, "database", "", "the server's --database (default SQLite in the work directory; a PostgreSQL database must be empty)")
	fs.BoolVar(&o.InProcess, "in-process", false, "run the server in this process (to profile everything at once; RSS is then server and agents together)")
	fs.StringVar(&o.Dir, "work-dir", "", "work directory for the server's state and the logs (default a temporary directory)")
	fs.BoolVar(&o.KeepDir, "keep-work-dir", false, "keep the work directory (logs, database) at the end")
	fs.DurationVar(&o.Timeout, "timeout", DefaultSimTimeout, "bound on the whole run")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of this process to this file (with --in-process: server and agents)")
}

func (o *SimulateOptions) setDefaults() error {
	if o.Agents == 0 {
		o.Agents = DefaultSimAgents
	}
	if o.Routers == 0 {
		o.Routers = DefaultSimRouters
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultSimConcurrency
	}
	if o.Agents < 1 || o.Routers < 1 || o.Concurrency < 1 || o.Projects < 0 || o.MaxAgentsPerRouter < 0 {
		return fmt.Errorf("simulate: agents, routers and concurrency must be positive, projects and max agents per router not negative")
	}
	if o.Agents > 9999 {
		return fmt.Errorf("simulate: at most 9999 agents")
	}
	if o.Projects == 0 {
		o.Projects = (o.Routers + DefaultSimRoutersPerProj - 1) / DefaultSimRoutersPerProj
	}
	if o.Changes == 0 {
		o.Changes = DefaultSimChanges
	}
	if o.Changes < 0 {
		o.Changes = 0
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultSimTimeout
	}
	if o.Binary == "" && !o.InProcess {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the l3ha binary: %w", err)
		}
		o.Binary = exe
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return nil
}

// bindingsPerRouter is how many agents each router ends up on.
func (o *SimulateOptions) bindingsPerRouter() int {
	if o.MaxAgentsPerRouter == 0 || o.MaxAgentsPerRouter > o.Agents {
		return o.Agents
	}
	return o.MaxAgentsPerRouter
}

// SimResult is what `lab simulate` measured; --json prints it as one object.
type SimResult struct {
	Agents             int    `json:"agents"`
	Routers            int    `json:"routers"`
	Projects           int    `json:"projects"`
	MaxAgentsPerRouter int    `json:"max_agents_per_router"`
	Concurrency        int    `json:"concurrency"`
	Database           string `json:"database"`
	ServerMode         string `json:"server_mode"` // child or in-process
	CPUs               int    `json:"cpus"`

	// Creates: POST /v2.0/routers, ha=true, timed per request.
	CreatePerS   float64 `json:"create_per_s"`
	CreateP50MS  float64 `json:"create_p50_ms"`
	CreateP99MS  float64 `json:"create_p99_ms"`
	CreateMaxMS  float64 `json:"create_max_ms"`
	TotalCreateS float64 `json:"total_create_s"`
	CreateErrors int     `json:"create_errors"`
	// CreateToAgents*: from a create's request until every agent the router
	// is bound to applied a desired state holding it (during the creates).
	CreateToAgentsP50MS float64 `json:"create_to_agents_p50_ms"`
	CreateToAgentsP99MS float64 `json:"create_to_agents_p99_ms"`
	// ConvergeS runs from the answer to the last create until every agent
	// applied every router bound to it.
	ConvergeS float64 `json:"converge_s"`

	// Scheduling balance, from what the agents applied.
	Unscheduled           int     `json:"unscheduled_routers"` // routers on fewer agents than they should be
	RoutersPerAgentMin    int     `json:"routers_per_agent_min"`
	RoutersPerAgentMax    int     `json:"routers_per_agent_max"`
	RoutersPerAgentStddev float64 `json:"routers_per_agent_stddev"`
	MastersPerAgentMin    int     `json:"masters_per_agent_min"`
	MastersPerAgentMax    int     `json:"masters_per_agent_max"`
	MastersPerAgentStddev float64 `json:"masters_per_agent_stddev"`
	// HAStatesChecked routers, picked at random, showed exactly one active
	// agent in GET /v2.0/routers/{id}/l3-agents (HAStatesWrong did not).
	HAStatesChecked int `json:"ha_states_checked"`
	HAStatesWrong   int `json:"ha_states_wrong"`

	// Changes: PUT /v2.0/routers/{id} (a new name), one at a time, timed
	// from the request until every agent of the router applied it.
	ChangeSamples int     `json:"change_samples"`
	ChangeP50MS   float64 `json:"change_p50_ms"`
	ChangeP99MS   float64 `json:"change_p99_ms"`
	ChangeMaxMS   float64 `json:"change_max_ms"`
	// ChangeFirstP50MS: until the first agent of the router applied it.
	ChangeFirstP50MS float64 `json:"change_first_p50_ms"`

	// Server process: RSS after convergence, peak RSS (VmHWM) and CPU time
	// over the whole run; the database size (SQLite).
	ServerRSSMiB     float64 `json:"server_rss_mib"`
	ServerPeakRSSMiB float64 `json:"server_peak_rss_mib"`
	ServerIdleRSSMiB float64 `json:"server_idle_rss_mib"` // before the first create
	ServerCPUS       float64 `json:"server_cpu_s"`
	DatabaseMiB      float64 `json:"database_mib,omitempty"`
	// Simulating process (the agents and API clients): CPU time.
	AgentsCPUS float64 `json:"agents_cpu_s"`
	// AgentApplies counts desired states applied by all agents.
	AgentApplies int64 `json:"agent_applies"`

	LoadAvgStart [3]float64 `json:"loadavg_start"`
	LoadAvgEnd   [3]float64 `json:"loadavg_end"`
	DurationS    float64    `json:"duration_s"`
	Notes        []string   `json:"notes,omitempty"`
}

// WriteJSON prints the result as one JSON object.
func (r *SimResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the result for people.
func (r *SimResult) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(f, a...)) }
	p("setup", "%d agents, %d HA routers in %d projects, max %d agents per router, %d API clients, %s, server %s, %d CPUs",
		r.Agents, r.Routers, r.Projects, r.MaxAgentsPerRouter, r.Concurrency, r.Database, r.ServerMode, r.CPUs)
	p("create throughput", "%.1f routers/s (%d in %.1f s, %d errors)", r.CreatePerS, r.Routers, r.TotalCreateS, r.CreateErrors)
	p("create latency", "p50 %.1f ms, p99 %.1f ms, max %.1f ms", r.CreateP50MS, r.CreateP99MS, r.CreateMaxMS)
	p("create to agents", "p50 %.0f ms, p99 %.0f ms (request until every bound agent applied it)", r.CreateToAgentsP50MS, r.CreateToAgentsP99MS)
	p("converged", "%.1f s after the last create", r.ConvergeS)
	p("routers per agent", "min %d, max %d, stddev %.2f (%d routers unscheduled)", r.RoutersPerAgentMin, r.RoutersPerAgentMax, r.RoutersPerAgentStddev, r.Unscheduled)
	p("masters per agent", "min %d, max %d, stddev %.2f", r.MastersPerAgentMin, r.MastersPerAgentMax, r.MastersPerAgentStddev)
	p("ha_state in the API", "%d routers checked, %d without exactly one active agent", r.HAStatesChecked, r.HAStatesWrong)
	p("change to agents", "p50 %.0f ms, p99 %.0f ms, max %.0f ms (%d samples; first agent p50 %.0f ms)", r.ChangeP50MS, r.ChangeP99MS, r.ChangeMaxMS, r.ChangeSamples, r.ChangeFirstP50MS)
	p("server RSS", "%.0f MiB after convergence, peak %.0f MiB, idle %.0f MiB", r.ServerRSSMiB, r.ServerPeakRSSMiB, r.ServerIdleRSSMiB)
	p("CPU time", "server %.1f s, agents and clients %.1f s, over %.1f s (%d applies)", r.ServerCPUS, r.AgentsCPUS, r.DurationS, r.AgentApplies)
	if r.DatabaseMiB > 0 {
		p("database", "%.1f MiB", r.DatabaseMiB)
	}
	p("load average", "%.2f %.2f %.2f at start, %.2f %.2f %.2f at end",
		r.LoadAvgStart[0], r.LoadAvgStart[1], r.LoadAvgStart[2], r.LoadAvgEnd[0], r.LoadAvgEnd[1], r.LoadAvgEnd[2])
	for _, n := range r.Notes {
		p("note", "%s", n)
	}
	return tw.Flush()
}

// Simulate runs the simulation; see SimulateOptions. On failure it returns
// what it measured so far with the error.
func Simulate(ctx context.Context, o SimulateOptions) (*SimResult, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	s := &simRun{o: o, res: &SimResult{
		Agents: o.Agents, Routers: o.Routers, Projects: o.Projects, MaxAgentsPerRouter: o.MaxAgentsPerRouter,
		Concurrency: o.Concurrency, Database: "sqlite", ServerMode: "child", CPUs: runtime.NumCPU(),
	}}
	if o.Database != "" {
		s.res.Database = strings.SplitN(o.Database, ":", 2)[0]
	}
	if o.InProcess {
		s.res.ServerMode = "in-process"
	}
	s.res.LoadAvgStart = simLoadAvg()
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	began := time.Now()
	cpu0 := simSelfCPU()
	err := s.run(ctx)
	s.res.DurationS = time.Since(began).Seconds()
	s.res.AgentsCPUS = simSelfCPU() - cpu0
	s.res.LoadAvgEnd = simLoadAvg()
	return s.res, err
}

type simRun struct {
	o     SimulateOptions
	res   *SimResult
	dir   string
	srv   *simServer
	api   *simAPI
	track *simTracker
}

func (s *simRun) sayf(format string, args ...any) {
	fmt.Fprintf(s.o.Out, "simulate: "+format+"\n", args...)
}

func (s *simRun) run(ctx context.Context) (err error) {
	o := s.o
	s.dir = o.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "l3ha-simulate-")
		if err != nil {
			return err
		}
		s.dir = d
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	if !o.KeepDir {
		defer func() {
			if o.Dir == "" {
				os.RemoveAll(s.dir)
			} else {
				os.RemoveAll(filepath.Join(s.dir, "server"))
			}
		}()
	} else {
		defer s.sayf("work directory kept: %s", s.dir)
	}

	s.srv, err = startSimServer(ctx, &s.o, s.dir)
	if err != nil {
		return err
	}
	defer s.srv.stop()
	s.api = newSimAPI(s.srv.url, o.Concurrency+4)
	defer s.api.close()
	if err := s.srv.waitReady(ctx, s.api); err != nil {
		return err
	}
	s.sayf("server %s up (pid %d, %s)", s.srv.url, s.srv.pid, s.res.Database)

	// Agents.
	s.track = newSimTracker(o.bindingsPerRouter())
	agentLog, err := os.Create(filepath.Join(s.dir, "agents.log"))
	if err != nil {
		return err
	}
	defer agentLog.Close()
	logger := slog.New(slog.NewTextHandler(agentLog, &slog.HandlerOptions{Level: slog.LevelWarn}))
	actx, stopAgents := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stopAgents()
		wg.Wait()
	}()
	for i := 1; i <= o.Agents; i++ {
		host := simHostName(i)
		dp := &simDataplane{FakeDataplane: agent.NewFakeDataplane(), host: host, track: s.track}
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 4, // long-poll, heartbeat, HA reports: each node its own connections
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}
		cfg := agent.Config{
			Host: host, Servers: []string{s.srv.url}, AgentToken: simAgentTokenOf(host),
			LocalIP:    fmt.Sprintf("10.%d.%d.%d", 100+i/65536, (i/256)%256, i%256),
			HTTPClient: &http.Client{Transport: tr},
		}
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			if err := agent.Run(actx, cfg, dp, logger); err != nil {
				logger.Error("agent failed", "host", host, "err", err)
			}
		})
	}
	if err := s.waitAgents(ctx); err != nil {
		return err
	}
	if rss, _, err := s.srv.memory(); err == nil {
		s.res.ServerIdleRSSMiB = rss
	}
	cpuBefore := s.srv.cpu()
	defer func() { s.res.ServerCPUS = s.srv.cpu() - cpuBefore }()

	if err := s.create(ctx); err != nil {
		return err
	}
	if err := s.converge(ctx); err != nil {
		return err
	}
	s.balance()
	if rss, peak, err := s.srv.memory(); err == nil {
		s.res.ServerRSSMiB, s.res.ServerPeakRSSMiB = rss, peak
	}
	if err := s.checkHAStates(ctx); err != nil {
		return err
	}
	if err := s.changes(ctx); err != nil {
		return err
	}
	if _, peak, err := s.srv.memory(); err == nil {
		s.res.ServerPeakRSSMiB = max(s.res.ServerPeakRSSMiB, peak)
	}
	s.res.AgentApplies = s.track.applies.Load()
	if fi, err := os.Stat(filepath.Join(s.dir, "server", "l3ha.db")); err == nil && o.Database == "" {
		size := fi.Size()
		if wal, err := os.Stat(filepath.Join(s.dir, "server", "l3ha.db-wal")); err == nil {
			size += wal.Size()
		}
		s.res.DatabaseMiB = float64(size) / (1 << 20)
	}
	if o.InProcess {
		s.res.Notes = append(s.res.Notes, "server ran in-process: RSS and CPU figures are those of server and agents together")
	}
	return nil
}

// waitAgents waits until the API shows every agent alive.
func (s *simRun) waitAgents(ctx context.Context) error {
	deadline := time.Now().Add(2*time.Minute + time.Duration(s.o.Agents)*100*time.Millisecond)
	for {
		var out struct {
			Agents []struct {
				Host  string `json:"host"`
				Alive bool   `json:"alive"`
			} `json:"agents"`
		}
		err := s.api.do(ctx, http.MethodGet, "/v2.0/agents?fields=host&fields=alive", nil, &out)
		n := 0
		for _, a := range out.Agents {
			if a.Alive && strings.HasPrefix(a.Host, "sim-") {
				n++
			}
		}
		if err == nil && n == s.o.Agents {
			s.sayf("%d agents registered", n)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agents registered (last error: %v)", n, s.o.Agents, err)
		}
		if err := simSleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// create makes the routers with o.Concurrency clients.
func (s *simRun) create(ctx context.Context) error {
	o := s.o
	lat := make([]time.Duration, o.Routers)
	var next atomic.Int64
	var errs atomic.Int64
	var firstErr atomic.Value
	var done atomic.Int64
	began := time.Now()
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		last, lastAt := int64(0), began
		for {
			select {
			case <-stopProgress:
				return
			case now := <-t.C:
				n := done.Load()
				rss, _, _ := s.srv.memory()
				s.sayf("created %d/%d (%.0f/s now, %.0f/s overall); agents hold %d of %d bindings; server RSS %.0f MiB",
					n, o.Routers, float64(n-last)/now.Sub(lastAt).Seconds(), float64(n)/now.Sub(began).Seconds(),
					s.track.totalHeld(), n*int64(o.bindingsPerRouter()), rss)
				last, lastAt = n, now
			}
		}
	}()
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Routers {
					return
				}
				body := map[string]any{"router": map[string]any{
					"name": fmt.Sprintf("sim-r%05d", i), "ha": true,
					"project_id": fmt.Sprintf("sim-p%04d", i%o.Projects),
				}}
				var out struct {
					Router struct {
						ID     string `json:"id"`
						Status string `json:"status"`
					} `json:"router"`
				}
				start := time.Now()
				err := s.api.do(ctx, http.MethodPost, "/v2.0/routers", body, &out)
				lat[i] = time.Since(start)
				if err == nil && out.Router.Status != "ACTIVE" {
					err = fmt.Errorf("router %s created with status %s", out.Router.ID, out.Router.Status)
				}
				if err != nil {
					if errs.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				s.track.created(out.Router.ID, start)
				done.Add(1)
			}
		})
	}
	wg.Wait()
	total := time.Since(began)
	close(stopProgress)
	<-progressDone
	s.track.setLastCreate(time.Now())
	r := s.res
	r.CreateErrors = int(errs.Load())
	r.TotalCreateS = total.Seconds()
	r.CreatePerS = float64(done.Load()) / total.Seconds()
	r.CreateP50MS, r.CreateP99MS, r.CreateMaxMS = simMS(simPercentile(lat, 50)), simMS(simPercentile(lat, 99)), simMS(simPercentile(lat, 100))
	s.sayf("created %d routers in %.1f s (%.1f/s; p50 %.1f ms, p99 %.1f ms; %d errors)",
		done.Load(), r.TotalCreateS, r.CreatePerS, r.CreateP50MS, r.CreateP99MS, r.CreateErrors)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("creating routers: %w", err)
	}
	if r.CreateErrors > 0 {
		return fmt.Errorf("%d of %d creates failed; first: %v", r.CreateErrors, o.Routers, firstErr.Load())
	}
	return nil
}

// converge waits until every agent applied every router bound to it.
func (s *simRun) converge(ctx context.Context) error {
	want := int64(s.o.Routers) * int64(s.o.bindingsPerRouter())
	last := time.Now()
	for {
		held := s.track.totalHeld()
		if held == want && s.track.allPlaced() {
			at, lastCreate := s.track.convergedAt()
			s.res.ConvergeS = max(at.Sub(lastCreate), 0).Seconds()
			p50, p99 := s.track.createToAgents()
			s.res.CreateToAgentsP50MS, s.res.CreateToAgentsP99MS = simMS(p50), simMS(p99)
			s.sayf("every agent holds all its routers %.1f s after the last create", s.res.ConvergeS)
			return nil
		}
		if held > want {
			return fmt.Errorf("agents hold %d router bindings, want %d", held, want)
		}
		if time.Since(last) > 10*time.Second {
			s.sayf("waiting for the agents: %d of %d bindings held", held, want)
			last = time.Now()
		}
		if err := simSleep(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the agents (%d of %d bindings held): %w", held, want, err)
		}
	}
}

// balance fills the scheduling figures from what the agents hold.
func (s *simRun) balance() {
	routers, masters, unscheduled := s.track.balance()
	for len(routers) < s.o.Agents { // agents that never applied a state
		routers, masters = append(routers, 0), append(masters, 0)
	}
	r := s.res
	r.Unscheduled = unscheduled
	r.RoutersPerAgentMin, r.RoutersPerAgentMax, r.RoutersPerAgentStddev = simSpread(routers)
	r.MastersPerAgentMin, r.MastersPerAgentMax, r.MastersPerAgentStddev = simSpread(masters)
	s.sayf("routers per agent %d..%d, masters per agent %d..%d", r.RoutersPerAgentMin, r.RoutersPerAgentMax, r.MastersPerAgentMin, r.MastersPerAgentMax)
}

// checkHAStates asks the API for the agents of a few routers and waits
// until each shows exactly one active (the agents report in batches).
func (s *simRun) checkHAStates(ctx context.Context) error {
	ids := s.track.sample(min(20, s.o.Routers))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		wrong := 0
		for _, id := range ids {
			var out struct {
				Agents []struct {
					HAState string `json:"ha_state"`
				} `json:"agents"`
			}
			if err := s.api.do(ctx, http.MethodGet, "/v2.0/routers/"+id+"/l3-agents", nil, &out); err != nil {
				return err
			}
			active := 0
			for _, a := range out.Agents {
				if a.HAState == agentapi.HAActive {
					active++
				}
			}
			if active != 1 || len(out.Agents) != s.o.bindingsPerRouter() {
				wrong++
			}
		}
		s.res.HAStatesChecked, s.res.HAStatesWrong = len(ids), wrong
		if wrong == 0 || time.Now().After(deadline) {
			return nil
		}
		if err := simSleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// changes times router renames until every agent of the router holds them.
func (s *simRun) changes(ctx context.Context) error {
	if s.o.Changes == 0 {
		return nil
	}
	ids := s.track.sample(s.o.Changes)
	var all, first []time.Duration
	for k, id := range ids {
		name := fmt.Sprintf("sim-change-%d", k)
		w := s.track.watch(id, name)
		start := time.Now()
		w.start = start
		err := s.api.do(ctx, http.MethodPut, "/v2.0/routers/"+id, map[string]any{"router": map[string]any{"name": name}}, nil)
		if err != nil {
			s.track.unwatch(w)
			return fmt.Errorf("updating router %s: %w", id, err)
		}
		select {
		case <-w.done:
		case <-time.After(2 * time.Minute):
			s.track.unwatch(w)
			return fmt.Errorf("change of router %s did not reach its agents within 2 minutes", id)
		case <-ctx.Done():
			s.track.unwatch(w)
			return ctx.Err()
		}
		all = append(all, w.last.Sub(start))
		first = append(first, w.first.Sub(start))
		// Let the other agents' rebuilds settle a little, as between
		// independent changes.
		if err := simSleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	r := s.res
	r.ChangeSamples = len(all)
	r.ChangeP50MS, r.ChangeP99MS, r.ChangeMaxMS = simMS(simPercentile(all, 50)), simMS(simPercentile(all, 99)), simMS(simPercentile(all, 100))
	r.ChangeFirstP50MS = simMS(simPercentile(first, 50))
	s.sayf("%d changes: p50 %.0f ms, p99 %.0f ms to every agent of the router", len(all), r.ChangeP50MS, r.ChangeP99MS)
	return nil
}

// ---- agents' data planes and what they applied

// simDataplane is the fake data plane with a hook after every apply.
type simDataplane struct {
	*agent.FakeDataplane
	host  string
	track *simTracker
}

func (d *simDataplane) Apply(ctx context.Context, st agentapi.DesiredState) error {
	if err := d.FakeDataplane.Apply(ctx, st); err != nil {
		return err
	}
	d.track.applied(d.host, &st, time.Now())
	return nil
}

// simTracker follows what each simulated agent applied.
type simTracker struct {
	perRouter int // bindings each router should get
	applies   atomic.Int64

	mu         sync.Mutex
	hosts      map[string]*simHost
	routers    map[string]*simRouter // by id, for created routers
	order      []string              // created router ids
	held       int64                 // Σ routers applied per host
	placed     int                   // routers held by perRouter agents
	lastCreate time.Time
	converged  time.Time // when held last changed
	watches    map[string]*simWatch
}

type simHost struct {
	routers map[string]bool // router id → held
	masters int
}

type simRouter struct {
	requested time.Time // create request sent
	hosts     []string  // agents holding it
	placedAt  time.Time // when the last of its agents applied it
}

type simWatch struct {
	router, name string
	want         map[string]bool
	start        time.Time
	first, last  time.Time
	done         chan struct{}
}

func newSimTracker(perRouter int) *simTracker {
	return &simTracker{perRouter: perRouter, hosts: map[string]*simHost{}, routers: map[string]*simRouter{}, watches: map[string]*simWatch{}}
}

func (t *simTracker) created(id string, requested time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.order = append(t.order, id)
	r := t.routers[id]
	if r == nil {
		r = &simRouter{}
		t.routers[id] = r
	}
	r.requested = requested
}

func (t *simTracker) setLastCreate(at time.Time) {
	t.mu.Lock()
	t.lastCreate = at
	t.mu.Unlock()
}

// applied records the desired state a host just applied.
func (t *simTracker) applied(host string, st *agentapi.DesiredState, now time.Time) {
	t.applies.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hosts[host]
	if h == nil {
		h = &simHost{routers: map[string]bool{}}
		t.hosts[host] = h
	}
	masters := 0
	seen := make(map[string]bool, len(st.Routers))
	for i := range st.Routers {
		rs := &st.Routers[i]
		seen[rs.ID] = true
		if rs.BindingIndex == 1 {
			masters++
		}
		if h.routers[rs.ID] {
			continue
		}
		h.routers[rs.ID] = true
		t.held++
		t.converged = now
		r := t.routers[rs.ID]
		if r == nil {
			// Applied before its create answered.
			r = &simRouter{}
			t.routers[rs.ID] = r
		}
		r.hosts = append(r.hosts, host)
		if len(r.hosts) == t.perRouter {
			t.placed++
			r.placedAt = now
		}
	}
	for id := range h.routers {
		if !seen[id] {
			// The simulation deletes nothing: a router leaving a host is
			// a rescheduling, counted out again.
			delete(h.routers, id)
			t.held--
			t.converged = now
			if r := t.routers[id]; r != nil {
				if len(r.hosts) == t.perRouter {
					t.placed--
				}
				r.hosts = slices.DeleteFunc(r.hosts, func(x string) bool { return x == host })
			}
		}
	}
	h.masters = masters
	for _, w := range t.watches {
		if !w.want[host] {
			continue
		}
		for i := range st.Routers {
			if st.Routers[i].ID == w.router && st.Routers[i].Name == w.name {
				delete(w.want, host)
				if w.first.IsZero() {
					w.first = now
				}
				if len(w.want) == 0 {
					w.last = now
					delete(t.watches, w.router)
					close(w.done)
				}
				break
			}
		}
	}
}

func (t *simTracker) totalHeld() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.held
}

func (t *simTracker) allPlaced() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.placed == len(t.order)
}

func (t *simTracker) convergedAt() (time.Time, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.converged, t.lastCreate
}

// createToAgents is the p50 and p99 of the time from a create request until
// every agent of the router held it.
func (t *simTracker) createToAgents() (time.Duration, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d []time.Duration
	for _, id := range t.order {
		r := t.routers[id]
		if !r.placedAt.IsZero() {
			d = append(d, max(r.placedAt.Sub(r.requested), 0))
		}
	}
	return simPercentile(d, 50), simPercentile(d, 99)
}

// balance returns the routers and masters of every agent that applied a
// state, and how many created routers are held by too few agents.
func (t *simTracker) balance() (routers, masters []int, unscheduled int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range t.hosts {
		routers = append(routers, len(h.routers))
		masters = append(masters, h.masters)
	}
	for _, id := range t.order {
		if len(t.routers[id].hosts) < t.perRouter {
			unscheduled++
		}
	}
	return routers, masters, unscheduled
}

// sample returns n created router ids picked at random (distinct while
// there are enough).
func (t *simTracker) sample(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	perm := rand.Perm(len(t.order))
	out := make([]string, 0, n)
	for i := 0; i < n && len(t.order) > 0; i++ {
		out = append(out, t.order[perm[i%len(perm)]])
	}
	return out
}

// watch starts waiting for name to reach every agent holding router.
func (t *simTracker) watch(router, name string) *simWatch {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := &simWatch{router: router, name: name, want: map[string]bool{}, done: make(chan struct{})}
	if r := t.routers[router]; r != nil {
		for _, h := range r.hosts {
			w.want[h] = true
		}
	}
	if len(w.want) == 0 {
		close(w.done)
		return w
	}
	t.watches[router] = w
	return w
}

func (t *simTracker) unwatch(w *simWatch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.watches[w.router] == w {
		delete(t.watches, w.router)
	}
}

// ---- the server

type simServer struct {
	url    string
	pid    int
	cmd    *exec.Cmd
	exited chan error
	logf   string
	cancel context.CancelFunc // in-process
	done   chan error         // in-process
}

// simHostName is the host name of simulated agent i (from 1).
func simHostName(i int) string { return fmt.Sprintf("sim-%04d", i) }

// simAgentTokenOf is the agent credential of a simulated host.
func simAgentTokenOf(host string) string { return simAgentToken + "-" + host }

// startSimServer starts `l3ha server` on a free loopback port.
func startSimServer(ctx context.Context, o *SimulateOptions, dir string) (*simServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	stateDir := filepath.Join(dir, "server")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		ln.Close()
		return nil, err
	}
	minAgents := 2
	if o.MaxAgentsPerRouter == 1 || o.Agents < 2 {
		minAgents = 1
	}
	tokens := filepath.Join(dir, "agent-tokens")
	var lines strings.Builder
	for i := 1; i <= o.Agents; i++ {
		fmt.Fprintf(&lines, "%s %s\n", simHostName(i), simAgentTokenOf(simHostName(i)))
	}
	if err := os.WriteFile(tokens, []byte(lines.String()), 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	args := []string{
		"--bind", addr, "--state-dir", stateDir, "--agent-tokens-file", tokens,
		"--auth-strategy", "noauth", "--l3-ha", "true",
		"--max-l3-agents-per-router", strconv.Itoa(o.MaxAgentsPerRouter),
		"--min-l3-agents-per-router", strconv.Itoa(minAgents),
	}
	if o.Database != "" {
		args = append(args, "--database", o.Database)
	}
	s := &simServer{url: "http://" + addr, logf: filepath.Join(dir, "server.log")}
	logFile, err := os.Create(s.logf)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if o.InProcess {
		defer logFile.Close()
		fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
		set := server.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			ln.Close()
			return nil, err
		}
		cfg, err := server.Load(set, nil)
		if err != nil {
			ln.Close()
			return nil, err
		}
		// The log file stays open for the server's life: hand it a copy.
		lf, err := os.OpenFile(s.logf, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			ln.Close()
			return nil, err
		}
		log := slog.New(slog.NewTextHandler(lf, nil))
		sctx, cancel := context.WithCancel(context.Background())
		srv, err := server.New(sctx, cfg, log)
		if err != nil {
			cancel()
			lf.Close()
			ln.Close()
			return nil, err
		}
		s.pid, s.cancel, s.done = os.Getpid(), cancel, make(chan error, 1)
		go func() {
			err := srv.ServeListener(sctx, ln)
			srv.Close()
			lf.Close()
			s.done <- err
		}()
		return s, nil
	}
	ln.Close() // the child binds it; a port taken meanwhile fails the start
	cmd := exec.Command(o.Binary, append([]string{"server"}, args...)...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a ^C reaches this process, which stops the
	// server after the agents.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s server: %w", o.Binary, err)
	}
	logFile.Close()
	s.cmd, s.pid, s.exited = cmd, cmd.Process.Pid, make(chan error, 1)
	go func() { s.exited <- cmd.Wait() }()
	return s, nil
}

// waitReady waits until the server answers the API.
func (s *simServer) waitReady(ctx context.Context, api *simAPI) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := api.do(ctx, http.MethodGet, "/v2.0/agents", nil, nil)
		if err == nil {
			return nil
		}
		if s.exited != nil {
			select {
			case werr := <-s.exited:
				s.exited <- werr
				return fmt.Errorf("the server exited (%v): %s", werr, tailFile(s.logf, 20))
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server did not answer within 60 s: %v: %s", err, tailFile(s.logf, 20))
		}
		if err := simSleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func (s *simServer) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
		return
	}
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// memory returns the server's RSS and peak RSS in MiB.
func (s *simServer) memory() (rss, peak float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return 0, 0, err
	}
	rss, peak = simStatusKB(b, "VmRSS:")/1024, simStatusKB(b, "VmHWM:")/1024
	// The kernel updates the high-water mark lazily: it may trail VmRSS.
	return rss, max(peak, rss), nil
}

// cpu returns the server's user+system CPU seconds so far.
func (s *simServer) cpu() float64 {
	if s.cancel != nil {
		return 0 // in-process: counted with the agents
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		return 0
	}
	return simStatCPU(b)
}

// simStatusKB reads a "Key:  123 kB" line of /proc/<pid>/status.
func simStatusKB(status []byte, key string) float64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseFloat(f[0], 64)
				return v
			}
		}
	}
	return 0
}

// simStatCPU returns utime+stime of a /proc/<pid>/stat line in seconds
// (USER_HZ is 100 on Linux).
func simStatCPU(stat []byte) float64 {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state is field 3, utime 14, stime 15.
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

func simSelfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func simLoadAvg() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		out[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return out
}

// ---- a small admin client of the API (noauth: no identity headers is admin)

type simAPI struct {
	base string
	hc   *http.Client
}

func newSimAPI(base string, conns int) *simAPI {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &simAPI{base: base, hc: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

func (c *simAPI) close() { c.hc.CloseIdleConnections() }

func (c *simAPI) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		if len(data) > 500 {
			data = data[:500]
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return nil
}

// ---- small helpers

func simSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// simPercentile is the p-th percentile (nearest rank) of d.
func simPercentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func simMS(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*100) / 100
}

// simSpread returns min, max and population standard deviation.
func simSpread(v []int) (lo, hi int, stddev float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	lo, hi = v[0], v[0]
	sum := 0.0
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
		sum += float64(x)
	}
	mean := sum / float64(len(v))
	ss := 0.0
	for _, x := range v {
		ss += (float64(x) - mean) * (float64(x) - mean)
	}
	return lo, hi, math.Round(math.Sqrt(ss/float64(len(v)))*100) / 100
}
