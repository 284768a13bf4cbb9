package neutronagent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/neutronlocal"
	"github.com/l3ha/l3ha/internal/rabbitlocal"
)

// cloud is the package's one RabbitMQ and neutron-server (ML2/linuxbridge,
// MariaDB) with its external network, started by the first test that needs
// it and stopped by TestMain. Each test adds its own nodes (hosts of its
// own), networks, routers and instances, and removes them when it ends.
type cloud struct {
	r     *rabbitlocal.Server
	n     *neutronlocal.Neutron
	dir   string
	extID string
}

var shared struct {
	once  sync.Once
	cloud *cloud
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if c := shared.cloud; c != nil {
		if err := c.n.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping neutron:", err)
			code = 1
		}
		c.r.Stop()
		if os.Getenv("L3HA_NEUTRONLOCAL_DIR") == "" {
			_ = os.RemoveAll(c.dir)
		}
	}
	os.Exit(code)
}

// startCloud returns the shared cloud, starting it on first use; a test
// skips (or with L3HA_TEST_REQUIRE_ALL fails) where it cannot run.
func startCloud(t testing.TB) *cloud {
	t.Helper()
	if err := neutronlocal.Available(); err != nil {
		skip(t, err.Error())
	}
	if err := rabbitlocal.Installed(); err != nil {
		skip(t, err.Error())
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		shared.cloud, shared.err = newCloud(ctx)
	})
	if shared.err != nil {
		t.Fatalf("starting the cloud: %v", shared.err)
	}
	return shared.cloud
}

func newCloud(ctx context.Context) (*cloud, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var dir string
	if keep := os.Getenv("L3HA_NEUTRONLOCAL_DIR"); keep != "" {
		dir = filepath.Join(keep, "neutronagent")
		_ = os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "neutronagent: scratch directory %s (kept)\n", dir)
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "l3ha-neutronagent-"); err != nil {
			return nil, err
		}
	}
	r, err := rabbitlocal.Start(ctx, filepath.Join(dir, "rabbitmq"), log)
	if err != nil {
		return nil, err
	}
	n, err := neutronlocal.Start(ctx, neutronlocal.Options{Dir: filepath.Join(dir, "neutron"), Log: log, AMQPURL: r.URL()})
	if err != nil {
		r.Stop()
		return nil, err
	}
	extID, _, err := n.CreateExternalNetwork(ctx, "public")
	if err != nil {
		return nil, errors.Join(err, n.Stop(), func() error { r.Stop(); return nil }())
	}
	return &cloud{r: r, n: n, dir: dir, extID: extID}, nil
}

// addNode adds a network node whose agents' host is o.Host, removed when
// the test ends; its L3 agent's logs are shown if the test fails.
func (c *cloud) addNode(ctx context.Context, t testing.TB, o neutronlocal.NodeOptions) *neutronlocal.Node {
	t.Helper()
	nd, err := c.n.AddNode(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{nd.L3AgentOutputPath(), nd.L3AgentLogPath()} {
				if b, err := os.ReadFile(f); err == nil {
					t.Logf("--- %s:\n%s", f, b[max(0, len(b)-12<<10):])
				}
			}
		}
		if err := nd.Remove(); err != nil {
			t.Errorf("removing node %s: %v", o.Host, err)
		}
		// neutron-server would count the node's agents alive until
		// agent_down_time passes and schedule the next test's routers on
		// them: they go with the node.
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var agents struct {
			Agents []struct {
				ID string `json:"id"`
			} `json:"agents"`
		}
		if err := c.n.Do(cctx, http.MethodGet, "/agents?host="+o.Host, nil, &agents); err != nil {
			t.Logf("listing the agents of %s: %v", o.Host, err)
			return
		}
		for _, a := range agents.Agents {
			if err := c.n.Do(cctx, http.MethodDelete, "/agents/"+a.ID, nil, nil); err != nil && !neutronlocal.IsNotFound(err) {
				t.Logf("deleting agent %s of %s: %v", a.ID, o.Host, err)
			}
		}
	})
	return nd
}

// haRouter is an admin's HA router with a gateway on the external network
// and an interface on a tenant network of its own (cidr), hosted by two
// nodes; an instance on the tenant network pings the upstream host
// through it.
type haRouter struct {
	id    string
	netID string
	gw    string // the router's address on the tenant network
	vm    *neutronlocal.Instance
	probe *neutronlocal.Prober
}

// newHARouter creates the router and its tenant network, waits until two
// L3 agents host it with one active, then starts the instance and its
// prober. All of it is deleted when the test ends.
func (c *cloud) newHARouter(ctx context.Context, t testing.TB, name, cidr string) (*haRouter, map[string]string) {
	t.Helper()
	n := c.n
	type idObj struct {
		ID string `json:"id"`
	}
	netID, subnetID, err := n.CreateNetwork(ctx, map[string]any{"name": name}, map[string]any{"cidr": cidr})
	if err != nil {
		t.Fatal(err)
	}
	var router struct{ Router idObj }
	if err := n.Do(ctx, http.MethodPost, "/routers", map[string]any{"router": map[string]any{
		"name": name, "ha": true, "external_gateway_info": map[string]any{"network_id": c.extID},
	}}, &router); err != nil {
		t.Fatal(err)
	}
	h := &haRouter{id: router.Router.ID, netID: netID}
	t.Cleanup(func() {
		// Best effort, so that the next test's agents see a tidy server;
		// a failure is logged, not fatal: the nodes go anyway.
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, step := range []struct {
			method, path string
			body         any
		}{
			{http.MethodPut, "/routers/" + h.id + "/remove_router_interface", map[string]any{"subnet_id": subnetID}},
			{http.MethodDelete, "/routers/" + h.id, nil},
			{http.MethodDelete, "/networks/" + h.netID, nil},
		} {
			if err := n.Do(cctx, step.method, step.path, step.body, nil); err != nil && !neutronlocal.IsNotFound(err) {
				t.Logf("cleaning up %s %s: %v", step.method, step.path, err)
			}
		}
	})
	if err := n.Do(ctx, http.MethodPut, "/routers/"+h.id+"/add_router_interface", map[string]any{"subnet_id": subnetID}, nil); err != nil {
		t.Fatal(err)
	}
	var states map[string]string
	waitFor(ctx, t, 3*time.Minute, "two agents hosting the router, one active", func() (bool, error) {
		var err error
		states, err = neutronlocal.HAStates(ctx, n, h.id)
		return len(states) == 2 && len(neutronlocal.ActiveHosts(states)) == 1, err
	})
	t.Logf("router %s: %v", h.id, states)
	vm, err := n.AddInstance(ctx, neutronlocal.InstanceOptions{Name: name, NetworkID: h.netID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vm.Remove(); err != nil {
			t.Logf("removing instance: %v", err)
		}
	})
	if err := neutronlocal.WaitPing(ctx, vm); err != nil {
		t.Fatalf("no ping through the router: %v", err)
	}
	h.vm, h.gw = vm, vm.Gateway().String()
	if h.probe, err = neutronlocal.StartProber(ctx, vm, neutronlocal.UpstreamIP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.probe.Stop)
	waitFor(ctx, t, time.Minute, "the prober's first reply", func() (bool, error) {
		_, ok := h.probe.FirstReplyAfter(time.Time{})
		return ok, nil
	})
	return h, states
}

// otherOf returns the host of the pair that is not h.
func otherOf(pair [2]string, h string) string {
	if pair[0] == h {
		return pair[1]
	}
	return pair[0]
}
