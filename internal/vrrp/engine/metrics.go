package engine

import (
	"maps"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// metrics are the engine's counters, kept whether or not they are exported
// to Prometheus.
type metrics struct {
	drops       *prometheus.CounterVec
	received    prometheus.Counter
	sent        prometheus.Counter
	sendErrors  prometheus.Counter
	transitions *prometheus.CounterVec
	applyErrors prometheus.Counter

	mu    sync.Mutex
	total map[vrrp.Reason]uint64
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "l3ha_vrrp_dropped_packets_total",
			Help: "VRRP packets the native engine dropped, by reason.",
		}, []string{"reason"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "l3ha_vrrp_adverts_received_total",
			Help: "VRRP adverts the native engine accepted.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "l3ha_vrrp_adverts_sent_total",
			Help: "VRRP adverts the native engine sent.",
		}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "l3ha_vrrp_send_errors_total",
			Help: "VRRP adverts the kernel refused to send.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "l3ha_vrrp_transitions_total",
			Help: "VRRP state transitions of the native engine, by new state.",
		}, []string{"state"}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "l3ha_vrrp_apply_errors_total",
			Help: "Failed attempts to apply a router's addresses, routes or gratuitous ARP.",
		}),
		total: map[vrrp.Reason]uint64{},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.drops, m.received, m.sent, m.sendErrors, m.transitions, m.applyErrors} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) dropSnapshot() map[vrrp.Reason]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.total)
}

// dropCounts counts one router's drops; the receive goroutine and the loop
// both add to it.
type dropCounts struct {
	m *metrics

	mu       sync.Mutex
	n        map[vrrp.Reason]uint64
	counters map[vrrp.Reason]prometheus.Counter
}

func (m *metrics) newDropCounts() *dropCounts {
	return &dropCounts{m: m, n: map[vrrp.Reason]uint64{}, counters: map[vrrp.Reason]prometheus.Counter{}}
}

func (d *dropCounts) add(r vrrp.Reason) {
	if r == "" {
		r = "unknown"
	}
	d.mu.Lock()
	d.n[r]++
	c := d.counters[r]
	if c == nil {
		c = d.m.drops.WithLabelValues(string(r))
		d.counters[r] = c
	}
	d.mu.Unlock()
	c.Inc()
	d.m.mu.Lock()
	d.m.total[r]++
	d.m.mu.Unlock()
}

func (d *dropCounts) snapshot() map[vrrp.Reason]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.n)
}
