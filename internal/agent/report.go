package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// reporter collects the data plane's HA transitions, writes them to the state
// files and sends them to the server in batches: the first transition opens a
// batch, ReportBatchDelay later the latest state of every router in it is sent
// in one report. A failed report is retried with backoff; transitions that
// arrive meanwhile join it, and only the latest state of a router is ever
// kept, so no transition is lost and nothing stale overtakes something fresh.
//
// Every ReassertInterval, and whenever the server may have missed or
// forgotten states (registration, reconnection, a new agent id), the next
// report is a re-assertion instead (agentapi.HAStateReport.Full): the
// current state of every router, with the transitions not yet accepted
// listed in Changed. That keeps what the server shows fresh whatever was
// lost or superseded there (a split brain that healed, a report the server
// overrode), at the cost of one small report per interval.
type reporter struct {
	a    *agent
	wake chan struct{} // cap 1

	mu      sync.Mutex
	pending map[string]string // router id → state, not yet accepted by the server
	known   map[string]string // router id → latest state, of every router the agent has
	why     map[string]string // router id → reason of its latest state (known's), "" if none
	urgent  bool              // resend without waiting for a retry timer
	// full makes the next report a re-assertion of every known router.
	full bool
	// files are the state files to write (state) or remove ("").
	files map[string]string
	// keep is the router set of the last applied desired state; nil until one
	// was applied. State files of other routers are removed.
	keep map[string]bool
	scan bool // look for state files of routers not in keep
	// filesRetry is set while state files could not be written: the
	// reporter's loop tries again every StateFileRetry. Loop-owned.
	filesRetry bool
	// bindings is each router's binding as of the last desired state
	// (binding index and HA port): when it changes the server has made a new
	// binding, which starts as standby, so the router's state is sent again.
	bindings map[string]string
}

func newReporter(a *agent) *reporter {
	return &reporter{
		a:        a,
		wake:     make(chan struct{}, 1),
		pending:  map[string]string{},
		known:    map[string]string{},
		why:      map[string]string{},
		files:    map[string]string{},
		bindings: map[string]string{},
	}
}

func (r *reporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// report is the ReportFunc handed to the data plane.
func (r *reporter) report(t Transition) {
	if t.RouterID == "" || (t.State != agentapi.HAActive && t.State != agentapi.HAStandby) {
		// The server would refuse the whole batch.
		r.a.log.Warn("data plane reported an invalid HA transition; ignored", "router_id", t.RouterID, "state", t.State)
		return
	}
	r.mu.Lock()
	prev, had := r.known[t.RouterID]
	r.known[t.RouterID] = t.State
	r.why[t.RouterID] = t.Reason
	r.pending[t.RouterID] = t.State
	changed := !had || prev != t.State
	if changed && r.a.cfg.StateDir != "" {
		r.files[t.RouterID] = t.State
	}
	r.mu.Unlock()
	if changed {
		r.a.transitions.WithLabelValues(t.State).Inc()
		r.a.log.Info("HA state", "router_id", t.RouterID, "state", t.State, "previous", prev, "reason", t.Reason)
	}
	r.poke()
}

// resendAll makes the next report, sent as soon as possible, a
// re-assertion of every known router's state: the server may have missed or
// forgotten them.
func (r *reporter) resendAll() {
	r.mu.Lock()
	r.full = true
	r.urgent = true
	r.mu.Unlock()
	r.poke()
}

// jittered returns d ±10%, so that agents started together do not re-assert
// in lockstep.
func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// keepOnly forgets routers that are not in st (the data plane removed them):
// their states are no longer reported and their state files go.
func (r *reporter) keepOnly(st *agentapi.DesiredState) {
	keep := make(map[string]bool, len(st.Routers))
	r.mu.Lock()
	for _, rt := range st.Routers {
		keep[rt.ID] = true
		b := fmt.Sprint(rt.BindingIndex)
		if rt.HAPort != nil {
			b += "/" + rt.HAPort.ID
		}
		if old, had := r.bindings[rt.ID]; had && old != b {
			if state, ok := r.known[rt.ID]; ok {
				r.pending[rt.ID] = state
			}
		}
		r.bindings[rt.ID] = b
	}
	for id := range r.bindings {
		if !keep[id] {
			delete(r.bindings, id)
		}
	}
	for id := range r.known {
		if !keep[id] {
			delete(r.known, id)
			delete(r.why, id)
			delete(r.pending, id)
			if r.a.cfg.StateDir != "" {
				r.files[id] = ""
			}
		}
	}
	if r.a.cfg.StateDir != "" {
		r.keep = keep
		r.scan = true
	}
	r.mu.Unlock()
	r.poke()
}

// stateFileRetry is how often state files that could not be written are
// tried again.
const stateFileRetry = 5 * time.Second

func (r *reporter) run(ctx context.Context) {
	a := r.a
	bo := backoff{min: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
	fails := streak{log: a.log, what: "reporting HA states"}
	files := streak{log: a.log, what: "writing HA state files"}
	var batch, retry, reassert, filesRetry <-chan time.Time
	armReassert := func() {
		if a.cfg.ReassertInterval > 0 {
			reassert = time.After(jittered(a.cfg.ReassertInterval))
		}
	}
	armReassert()
	for {
		select {
		case <-ctx.Done():
			return
		case <-filesRetry:
			filesRetry = nil
			r.syncFiles(&files)
			if r.filesRetry {
				filesRetry = time.After(stateFileRetry)
			}
			continue
		case <-r.wake:
			r.syncFiles(&files)
			if r.filesRetry && filesRetry == nil {
				filesRetry = time.After(stateFileRetry)
			}
			r.mu.Lock()
			n, urgent, full := len(r.pending), r.urgent, r.full
			r.urgent = false
			r.mu.Unlock()
			if n == 0 && !full {
				continue
			}
			if urgent && retry != nil {
				retry = nil
			}
			if batch == nil && retry == nil {
				batch = time.After(a.cfg.ReportBatchDelay)
			}
			continue
		case <-reassert:
			// Re-armed once the re-assertion went through, so that a
			// failing server is not sent a pile of them.
			reassert = nil
			r.mu.Lock()
			r.full = true
			r.mu.Unlock()
			if batch == nil && retry == nil {
				batch = time.After(a.cfg.ReportBatchDelay)
			}
			continue
		case <-batch:
			batch = nil
		case <-retry:
			retry = nil
		}
		sent, full, err := r.send(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails.failed(err)
			r.mu.Lock()
			limit := time.Duration(0)
			if len(r.pending) > 0 {
				limit = a.cfg.TransitionRetry
			}
			r.mu.Unlock()
			retry = time.After(bo.next(limit))
			continue
		}
		if full {
			armReassert()
		}
		if sent {
			fails.succeeded()
			bo.reset()
		}
		// Transitions that came in during the send have poked wake and
		// open the next batch.
	}
}

// send sends everything pending in one report: a re-assertion of every
// known router if one is due (full), else the pending transitions. On
// failure what it took goes back to pending, except routers with a fresher
// state there and routers that were forgotten meanwhile, and a re-assertion
// stays due. It reports whether it sent a report and whether a re-assertion
// was due (and is now done: sent, or nothing to re-assert).
func (r *reporter) send(ctx context.Context) (sent, full bool, err error) {
	r.mu.Lock()
	full = r.full
	if len(r.pending) == 0 && (!full || len(r.known) == 0) {
		r.full = false
		r.mu.Unlock()
		return false, full, nil
	}
	rep := agentapi.HAStateReport{Host: r.a.cfg.Host}
	if iv := r.a.cfg.ReassertInterval; iv > 0 {
		rep.ReassertSeconds = iv.Seconds()
	}
	pending := r.pending
	r.pending = map[string]string{}
	r.full = false
	if full {
		rep.Full = true
		rep.States = maps.Clone(r.known)
		for id := range pending {
			if _, ok := rep.States[id]; ok {
				rep.Changed = append(rep.Changed, id)
			}
		}
		slices.Sort(rep.Changed)
	} else {
		rep.States = pending
	}
	// The reasons of the transitions sent: every state a router entered
	// is pending until the server took it, and why holds its reason.
	for id := range pending {
		if why := r.why[id]; why != "" {
			if rep.Reasons == nil {
				rep.Reasons = map[string]string{}
			}
			rep.Reasons[id] = why
		}
	}
	r.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, r.a.cfg.RequestTimeout)
	err = r.a.client.ReportHAStates(rctx, rep)
	cancel()
	if err != nil {
		r.mu.Lock()
		for id, s := range pending {
			_, fresher := r.pending[id]
			_, known := r.known[id]
			if !fresher && known {
				r.pending[id] = s
			}
		}
		if full {
			r.full = true
		}
		r.mu.Unlock()
		return false, full, err
	}
	r.a.log.Debug("reported HA states", "routers", len(rep.States), "full", full, "transitions", len(pending))
	return true, full, nil
}

// syncFiles writes and removes state files as queued.
func (r *reporter) syncFiles(s *streak) {
	dir := r.a.cfg.StateDir
	if dir == "" {
		return
	}
	r.mu.Lock()
	files := r.files
	r.files = map[string]string{}
	var keep map[string]bool
	if r.scan {
		keep = maps.Clone(r.keep)
		r.scan = false
	}
	r.mu.Unlock()

	var errs []error
	failed := map[string]string{}
	for id, state := range files {
		var err error
		if state == "" {
			err = removeStateFile(dir, id)
		} else {
			err = writeStateFile(dir, id, state, r.a.cfg.StateFileMaster)
		}
		if err != nil {
			errs = append(errs, err)
			failed[id] = state
		}
	}
	if keep != nil {
		entries, err := os.ReadDir(filepath.Join(dir, "ha_confs"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		for _, e := range entries {
			if e.IsDir() && !keep[e.Name()] {
				if err := removeStateFile(dir, e.Name()); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if len(failed) > 0 || keep != nil && len(errs) > 0 {
		// Kept for the next try (a newer state of a router wins), so that
		// the files are right once the disk has room again.
		r.mu.Lock()
		for id, state := range failed {
			if _, newer := r.files[id]; !newer {
				r.files[id] = state
			}
		}
		if keep != nil && len(errs) > len(failed) {
			r.scan = true
		}
		r.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		s.failed(err)
		r.a.setStateDirError(err)
		r.filesRetry = true
	} else if len(files) > 0 || keep != nil {
		if s.succeeded() {
			r.a.setStateDirError(nil)
		}
		r.filesRetry = false
	}
}

// StateFile is where the state of routerID is written under stateDir:
// <stateDir>/ha_confs/<routerID>/state, holding "master" or "backup" as
// Neutron's.
func StateFile(stateDir, routerID string) string {
	return filepath.Join(stateDir, "ha_confs", routerID, "state")
}

// validRouterID reports whether id is safe as a file name.
func validRouterID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\\\x00")
}

// fileState is what a state file holds for an HA state: master (or the
// word of Config.StateFileMaster) or backup.
func fileState(state, masterWord string) string {
	switch state {
	case agentapi.HAActive:
		return masterWord
	case agentapi.HAStandby:
		return "backup"
	}
	return state
}

// writeStateFile writes state to id's state file, a master as masterWord.
func writeStateFile(dir, id, state, masterWord string) error {
	if !validRouterID(id) {
		return fmt.Errorf("router id %q is not a file name", id)
	}
	path := StateFile(dir, id)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return err
	}
	_, werr := tmp.WriteString(fileState(state, masterWord) + "\n")
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// removeStateFile removes the state file of id, and its directory if that is
// then empty (a data plane may keep other files there).
func removeStateFile(dir, id string) error {
	if !validRouterID(id) {
		return nil
	}
	path := StateFile(dir, id)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_ = os.Remove(filepath.Dir(path)) // fails when not empty: fine
	return nil
}
