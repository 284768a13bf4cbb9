package dashtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/chromedp/chromedp"
)

// Router is what the page shows for one HA router (a row of its routers
// table).
type Router struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Master is the master's host the row is drawn for ("" none, or
	// split brain); MasterText is what its master column reads ("net1",
	// "none", "split brain: net1, net2").
	Master     string `json:"master"`
	MasterText string `json:"master_text"`
	SplitBrain bool   `json:"split_brain"`
	AdminDown  bool   `json:"admin_down"`
	// Bindings are the router's agents in the page's order (by host).
	Bindings []Binding `json:"bindings"`
	// LastTransition is the text of its last-transition column ("none"
	// when it has none).
	LastTransition string `json:"last_transition"`
}

// Binding is one agent of a router, as the page shows it.
type Binding struct {
	AgentID string `json:"agent_id"`
	Host    string `json:"host"`
	// HAState is the state the page shows: active, standby or unknown.
	HAState string `json:"ha_state"`
	Alive   bool   `json:"alive"`
	// Switchover says whether the binding has a "make master" button.
	Switchover bool `json:"switchover"`
}

// Binding returns the router's binding on host.
func (r Router) Binding(host string) (Binding, bool) {
	for _, b := range r.Bindings {
		if b.Host == host {
			return b, true
		}
	}
	return Binding{}, false
}

// Agent is a row of the page's agents table.
type Agent struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Alive   bool   `json:"alive"`
	Routers int    `json:"routers"`
	Masters int    `json:"masters"`
}

// Transition is an item of the page's timeline (newest first there).
type Transition struct {
	RouterID string `json:"router_id"`
	Host     string `json:"host"`
	From     string `json:"from"`
	To       string `json:"to"`
	Reason   string `json:"reason"`
	// Text is the item as shown.
	Text string `json:"text"`
}

// routersJS reads the routers table.
const routersJS = `Array.from(document.querySelectorAll('#routers tr.router')).map((tr) => ({
  id: tr.dataset.routerId || '',
  name: tr.dataset.routerName || '',
  master: tr.dataset.master || '',
  master_text: tr.querySelector('.master-cell').innerText.trim(),
  split_brain: tr.dataset.splitBrain === 'true',
  admin_down: tr.cells[0].innerText.includes('admin down'),
  bindings: Array.from(tr.querySelectorAll('.binding')).map((b) => ({
    agent_id: b.dataset.agentId || '',
    host: b.dataset.host || '',
    ha_state: b.querySelector('.badge').innerText.trim(),
    alive: b.dataset.alive === 'true',
    switchover: !!b.querySelector('button.switchover'),
  })),
  last_transition: tr.querySelector('.last-transition').innerText.trim(),
}))`

// Routers returns what the page shows for every HA router, in its order.
func (b *Browser) Routers(ctx context.Context) ([]Router, error) {
	rs, err := eval[[]Router](ctx, b, routersJS)
	if err != nil {
		return nil, fmt.Errorf("dashtest: reading the routers table: %w", err)
	}
	return rs, nil
}

// Router returns what the page shows for the router with id, false if the
// page has no row for it.
func (b *Browser) Router(ctx context.Context, id string) (Router, bool, error) {
	rs, err := b.Routers(ctx)
	if err != nil {
		return Router{}, false, err
	}
	for _, r := range rs {
		if r.ID == id {
			return r, true, nil
		}
	}
	return Router{}, false, nil
}

// WaitRouter waits until the page shows the router with id and cond holds
// for it, and returns that row; when ctx ends first, the error says what
// the page showed last.
func (b *Browser) WaitRouter(ctx context.Context, id string, cond func(Router) bool) (Router, error) {
	var last Router
	var found bool
	err := WaitFor(ctx, func() (bool, error) {
		r, ok, err := b.Router(ctx, id)
		if err != nil {
			return false, err
		}
		last, found = r, ok
		return ok && cond(r), nil
	})
	if err != nil {
		if !found {
			return last, fmt.Errorf("dashtest: router %s: not shown: %w", id, err)
		}
		return last, fmt.Errorf("dashtest: router %s: page shows %+v: %w", id, last, err)
	}
	return last, nil
}

// Agents returns the page's agents table.
func (b *Browser) Agents(ctx context.Context) ([]Agent, error) {
	as, err := eval[[]Agent](ctx, b, `Array.from(document.querySelectorAll('#agents tr.agent')).map((tr) => ({
  id: tr.dataset.agentId || '', host: tr.dataset.host || '', alive: tr.dataset.alive === 'true',
  routers: Number(tr.querySelector('.routers').innerText), masters: Number(tr.querySelector('.masters').innerText),
}))`)
	if err != nil {
		return nil, fmt.Errorf("dashtest: reading the agents table: %w", err)
	}
	return as, nil
}

// Timeline returns the page's timeline of transitions, newest first as
// shown.
func (b *Browser) Timeline(ctx context.Context) ([]Transition, error) {
	ts, err := eval[[]Transition](ctx, b, `Array.from(document.querySelectorAll('#timeline li.transition')).map((li) => ({
  router_id: li.dataset.routerId || '', host: li.dataset.host || '', from: li.dataset.from || '',
  to: li.dataset.to || '', reason: li.dataset.reason || '', text: li.innerText.trim(),
}))`)
	if err != nil {
		return nil, fmt.Errorf("dashtest: reading the timeline: %w", err)
	}
	return ts, nil
}

// BenchPlotShown reports whether the page shows the failover benchmark's
// plot, loaded (an image with a size).
func (b *Browser) BenchPlotShown(ctx context.Context) (bool, error) {
	return eval[bool](ctx, b, `(() => { const s = document.getElementById('bench-section'); const i = document.getElementById('bench');
  return !!(s && !s.hidden && i && i.complete && i.naturalWidth > 0); })()`)
}

// SwitchoverResult is the outcome of a switchover the page shows.
type SwitchoverResult struct {
	// OK: the API accepted the request (2xx).
	OK bool
	// Status is the HTTP status of the API's answer (0: no answer).
	Status int
	// Type is the NeutronError's type of a refusal ("" for a success).
	Type string
	// Message is the banner's text, the NeutronError's message included.
	Message string
}

// switchoverResultJS reads the banner of the last switchover request.
const switchoverResultJS = `(() => { const e = document.getElementById('switchover-result');
  return { seq: Number(e.dataset.seq || 0), outcome: e.dataset.outcome || '', status: Number(e.dataset.status || 0),
    type: e.dataset.type || '', router_id: e.dataset.routerId || '', host: e.dataset.host || '', text: e.innerText.trim() }; })()`

type switchoverBanner struct {
	Seq      int    `json:"seq"`
	Outcome  string `json:"outcome"`
	Status   int    `json:"status"`
	Type     string `json:"type"`
	RouterID string `json:"router_id"`
	Host     string `json:"host"`
	Text     string `json:"text"`
}

// Switchover clicks the "make master" button of the router's binding on
// host, as a person would, and returns the outcome the page then shows
// (the page made the API request: POST /v2.0/routers/{id}/switchover). An
// error means no outcome: no such button, or no answer before ctx ended.
func (b *Browser) Switchover(ctx context.Context, routerID, host string) (SwitchoverResult, error) {
	before, err := eval[switchoverBanner](ctx, b, switchoverResultJS)
	if err != nil {
		return SwitchoverResult{}, fmt.Errorf("dashtest: reading the switchover banner: %w", err)
	}
	sel := fmt.Sprintf(`#routers tr.router[data-router-id=%s] .binding[data-host=%s] button.switchover`, cssString(routerID), cssString(host))
	if n, err := eval[int](ctx, b, "document.querySelectorAll("+strconv.Quote(sel)+").length"); err != nil {
		return SwitchoverResult{}, err
	} else if n == 0 {
		r, _, _ := b.Router(ctx, routerID)
		return SwitchoverResult{}, fmt.Errorf("dashtest: router %s has no switchover button for %s (page shows %+v)", routerID, host, r)
	}
	if err := b.run(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		return SwitchoverResult{}, fmt.Errorf("dashtest: clicking the switchover button of router %s on %s: %w", routerID, host, err)
	}
	var now switchoverBanner
	err = WaitFor(ctx, func() (bool, error) {
		var err error
		now, err = eval[switchoverBanner](ctx, b, switchoverResultJS)
		return now.Seq > before.Seq && now.Outcome != "pending" && now.Outcome != "", err
	})
	if err != nil {
		return SwitchoverResult{}, fmt.Errorf("dashtest: waiting for the outcome of the switchover of router %s to %s (banner %+v): %w", routerID, host, now, err)
	}
	if now.RouterID != routerID || now.Host != host {
		return SwitchoverResult{}, fmt.Errorf("dashtest: the page shows the outcome of a switchover of router %s to %s, not of %s to %s", now.RouterID, now.Host, routerID, host)
	}
	return SwitchoverResult{OK: now.Outcome == "ok", Status: now.Status, Type: now.Type, Message: now.Text}, nil
}

// cssString quotes s as a CSS string.
func cssString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\%x ", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// errClosed is returned by a Browser's methods after Close.
var errClosed = errors.New("dashtest: browser closed")
