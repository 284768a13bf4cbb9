package dataplane

import (
	"log/slog"
	"sync"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ctsync"
)

// connSync runs one conntrack sync (ctsync.Syncer) per HA router of the
// node and tells it the router's VRRP state, so a backup always holds its
// master's connections and a takeover keeps them.
type connSync struct {
	log *slog.Logger
	mu  sync.Mutex
	// syncers by router id, with the configuration they were started with.
	syncers map[string]*routerSync
}

type routerSync struct {
	cfg ctsync.Config
	s   *ctsync.Syncer
}

func newConnSync(log *slog.Logger) *connSync {
	return &connSync{log: log, syncers: map[string]*routerSync{}}
}

// ensure runs r's sync (anew if its namespace, device, VRID or HA network
// changed); state is the router's last reported VRRP state on this node.
func (c *connSync) ensure(r HARouter, state string) error {
	cfg := ctsync.Config{
		RouterID: r.RouterID, Namespace: r.Namespace, HADevice: r.HADevice, VRID: r.VRID,
		HANet: r.HAAddress.Masked(), Logger: c.log,
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.syncers[r.RouterID]; ok {
		if cur.cfg.Namespace == cfg.Namespace && cur.cfg.HADevice == cfg.HADevice && cur.cfg.VRID == cfg.VRID && cur.cfg.HANet == cfg.HANet {
			return nil
		}
		cur.s.Close()
		delete(c.syncers, r.RouterID)
	}
	s, err := ctsync.Start(cfg)
	if err != nil {
		return err
	}
	s.SetMaster(state == agentapi.HAActive)
	c.syncers[r.RouterID] = &routerSync{cfg: cfg, s: s}
	return nil
}

// setState follows a VRRP transition of the router on this node.
func (c *connSync) setState(routerID, state string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rs, ok := c.syncers[routerID]; ok {
		rs.s.SetMaster(state == agentapi.HAActive)
	}
}

// remove stops a router's sync (before its namespace goes).
func (c *connSync) remove(routerID string) {
	c.mu.Lock()
	rs, ok := c.syncers[routerID]
	delete(c.syncers, routerID)
	c.mu.Unlock()
	if ok {
		rs.s.Close()
	}
}

// close stops every sync; the kernel tables stay for the next agent.
func (c *connSync) close() {
	c.mu.Lock()
	all := c.syncers
	c.syncers = map[string]*routerSync{}
	c.mu.Unlock()
	for _, rs := range all {
		rs.s.Close()
	}
}
