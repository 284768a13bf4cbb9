package neutronagent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/oslo"
)

// osloRPC is RPC over an oslo.messaging client.
type osloRPC struct{ c *oslo.Client }

func (o osloRPC) Call(ctx context.Context, topic, version, method string, args map[string]any) (json.RawMessage, error) {
	return o.c.Call(ctx, oslo.Target{Topic: topic, Version: version}, method, args)
}

func (o osloRPC) Cast(ctx context.Context, topic, version, method string, args map[string]any) error {
	return o.c.Cast(ctx, oslo.Target{Topic: topic, Version: version}, method, args)
}

// reportingDataplane tells neutron-server what the data plane applied
// (floating IP statuses) after each successful Apply.
type reportingDataplane struct {
	agent.Dataplane
	srv *Server
}

func (d reportingDataplane) Apply(ctx context.Context, st agentapi.DesiredState) error {
	if err := d.Dataplane.Apply(ctx, st); err != nil {
		return err
	}
	d.srv.Applied(ctx, st)
	return nil
}

// Run serves neutron-server as an L3 agent until ctx ends: it connects to
// RabbitMQ, consumes topic l3_agent (shared, l3_agent.<host> and fanout),
// and runs the l3ha agent loops with neutron-server as their control plane
// and dp as the data plane. After every reconnect to RabbitMQ it syncs
// every router again (casts may have been lost), without touching what
// runs.
func Run(ctx context.Context, cfg *Config, dp agent.Dataplane, reg prometheus.Registerer, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if filepath.Base(cfg.HAConfsPath) != "ha_confs" {
		return fmt.Errorf("ha_confs_path %s: l3ha keeps its state files in <dir>/ha_confs; give a path ending in ha_confs", cfg.HAConfsPath)
	}
	// A node that ran neutron-l3-agent until now: its keepalived would
	// speak VRRP beside l3ha's for the same routers.
	if n, err := takeOverFromNeutron(cfg.HAConfsPath, log); err != nil {
		return err
	} else if n > 0 {
		log.Info("took the node's routers over from neutron-l3-agent", "processes_stopped", n)
	}
	t, err := oslo.Dial(ctx, oslo.Config{
		TransportURL: cfg.TransportURL, ControlExchange: cfg.ControlExchange, RPCResponseTimeout: cfg.RPCTimeout,
		ConnectionName: "l3ha-neutron-l3-agent:" + cfg.Host, Log: log.With("component", "oslo.messaging"),
	})
	if err != nil {
		return fmt.Errorf("connecting to RabbitMQ: %w", err)
	}
	defer t.Close()
	client := oslo.NewClient(t)
	defer client.Close()
	srv := NewServer(cfg, osloRPC{client}, log)

	methods := map[string]oslo.Handler{}
	for name, h := range srv.Endpoint() {
		methods[name] = func(ctx context.Context, _ map[string]any, args json.RawMessage) (any, error) { return h(ctx, args) }
	}
	rpcServer, err := oslo.NewServer(t, oslo.Target{Topic: TopicL3Agent, Server: cfg.Host}, oslo.Endpoint{Version: "1.4", Methods: methods})
	if err != nil {
		return err
	}
	if err := rpcServer.Start(ctx); err != nil {
		return fmt.Errorf("consuming %s: %w", TopicL3Agent, err)
	}
	defer func() {
		// The context is done: stop with a fresh one, briefly.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = rpcServer.Stop(sctx)
	}()
	reconnected, stopNotify := t.NotifyReconnect()
	defer stopNotify()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-reconnected:
				if !ok {
					return
				}
				log.Info("reconnected to RabbitMQ; syncing every router with neutron-server (what runs is not touched)")
				srv.Resync()
			}
		}
	}()
	log.Info("serving neutron-server as its L3 agent", "host", cfg.Host, "queues", rpcServer.Queues())
	return agent.Run(ctx, agent.Config{
		Host: cfg.Host, Server: srv, StateDir: filepath.Dir(cfg.HAConfsPath), StateFileMaster: "primary", AgentMode: agentapi.ModeLegacy,
		HeartbeatInterval: cfg.ReportInterval, RequestTimeout: cfg.RPCTimeout, Metrics: reg,
	}, reportingDataplane{Dataplane: dp, srv: srv}, log)
}
