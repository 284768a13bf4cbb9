package server_test

// The API driven by gophercloud v2, the Go SDK that Terraform's OpenStack
// provider uses: the ordinary flows (networks, subnets, routers, interfaces,
// gateways, floating IPs, L3 agent scheduling) must work with it unchanged,
// and `ha` — which gophercloud's routers.CreateOpts lacks — must be
// settable by wrapping its options.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/agents"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/external"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/routers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/portsbinding"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/servertest"
)

// gcHARouterCreateOpts is gophercloud's router create request with Neutron's
// admin-only `ha` attribute (l3-ha extension), which gophercloud does not
// model. HA nil leaves `ha` out, so that l3_ha decides.
type gcHARouterCreateOpts struct {
	routers.CreateOpts
	HA *bool `json:"ha,omitempty"`
}

// ToRouterCreateMap implements routers.CreateOptsBuilder.
func (o gcHARouterCreateOpts) ToRouterCreateMap() (map[string]any, error) {
	return gophercloud.BuildRequestBody(o, "router")
}

// gcHAFlags are the admin-only attributes of a router response.
type gcHAFlags struct {
	HA          *bool `json:"ha"`
	Distributed *bool `json:"distributed"`
}

// gcPort is a port with its binding attributes (admin view).
type gcPort struct {
	ports.Port
	portsbinding.PortsBindingExt
}

// gcNetworkClient is a gophercloud networking v2 client of the server at
// base, as openstack.NewNetworkV2 would build it from a catalog entry, that
// sends headers with every request (X-Auth-Token, or noauth identity).
func gcNetworkClient(base string, headers map[string]string) *gophercloud.ServiceClient {
	provider := &gophercloud.ProviderClient{HTTPClient: http.Client{Timeout: 60 * time.Second}}
	if tok := headers["X-Auth-Token"]; tok != "" {
		provider.SetToken(tok)
	}
	return &gophercloud.ServiceClient{
		ProviderClient: provider, Endpoint: base + "/", ResourceBase: base + "/v2.0/", MoreHeaders: headers,
	}
}

// gcWantStatus checks that err is an HTTP error with status and, when
// given, NeutronError type.
func gcWantStatus(t *testing.T, what string, err error, status int, typ string) {
	t.Helper()
	var ue gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &ue) {
		t.Errorf("%s: error %v, want HTTP %d", what, err, status)
		return
	}
	if ue.Actual != status {
		t.Errorf("%s: HTTP %d, want %d: %s", what, ue.Actual, status, ue.Body)
	}
	var body struct {
		NeutronError struct{ Type string } `json:"NeutronError"`
	}
	if err := json.Unmarshal(ue.Body, &body); err != nil || typ != "" && body.NeutronError.Type != typ {
		t.Errorf("%s: body %s, want NeutronError type %s", what, ue.Body, typ)
	}
}

// TestGophercloudDrivesAnHARouterEndToEnd: with static tokens (the way
// `openstack --os-token` and gophercloud's token auth talk to l3ha), an
// admin builds an external network and an HA router for a tenant; the
// tenant attaches its network, sets the gateway and a floating IP; the
// admin sees one active agent, the agents are told the whole router, the
// router's ports follow the master through a failover, the router can be
// moved between agents, and tearing it down removes the HA network.
func TestGophercloudDrivesAnHARouterEndToEnd(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokenFile, []byte("admin-token admin admin,member,reader\ndemo-token demo member,reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := api.LoadTokenFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			c := newHACloud(t, servertest.Options{Backend: backend, Auth: auth})
			c.adminHeaders = map[string]string{"X-Auth-Token": "admin-token"}
			c.startAgents("net1", "net2")
			admin := gcNetworkClient(c.srv.URL, map[string]string{"X-Auth-Token": "admin-token"})
			demo := gcNetworkClient(c.srv.URL, map[string]string{"X-Auth-Token": "demo-token"})
			yes := true

			// The cloud: an external network (admin), a tenant network.
			ext, err := networks.Create(ctx, admin, external.CreateOptsExt{CreateOptsBuilder: networks.CreateOpts{Name: "public"}, External: &yes}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := subnets.Create(ctx, admin, subnets.CreateOpts{NetworkID: ext.ID, CIDR: "172.24.4.0/24", IPVersion: gophercloud.IPv4, Name: "public-subnet"}).Extract(); err != nil {
				t.Fatal(err)
			}
			demoNet, err := networks.Create(ctx, demo, networks.CreateOpts{Name: "demo-net"}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			demoSub, err := subnets.Create(ctx, demo, subnets.CreateOpts{NetworkID: demoNet.ID, CIDR: "10.0.0.0/24", IPVersion: gophercloud.IPv4, Name: "demo-subnet"}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if demoSub.GatewayIP != "10.0.0.1" {
				t.Errorf("tenant subnet gateway %q, want 10.0.0.1", demoSub.GatewayIP)
			}

			// The admin creates the HA router for the tenant; the tenant may not ask for HA.
			created := routers.Create(ctx, admin, gcHARouterCreateOpts{CreateOpts: routers.CreateOpts{Name: "ha-router", TenantID: "demo"}, HA: &yes})
			router, err := created.Extract()
			if err != nil {
				t.Fatal(err)
			}
			var flags gcHAFlags
			if err := created.ExtractIntoStructPtr(&flags, "router"); err != nil {
				t.Fatal(err)
			}
			if flags.HA == nil || !*flags.HA || router.ProjectID != "demo" {
				t.Fatalf("created router %+v with ha %v; want an HA router of project demo", router, flags.HA)
			}
			_, err = routers.Create(ctx, demo, gcHARouterCreateOpts{CreateOpts: routers.CreateOpts{Name: "mine"}, HA: &yes}).Extract()
			gcWantStatus(t, "tenant creating an HA router", err, http.StatusForbidden, "PolicyNotAuthorized")

			var tenantView struct {
				Router map[string]any `json:"router"`
			}
			if err := routers.Get(ctx, demo, router.ID).ExtractInto(&tenantView); err != nil {
				t.Fatal(err)
			}
			if _, ok := tenantView.Router["ha"]; ok || tenantView.Router["id"] != router.ID {
				t.Errorf("tenant's view of its router %v: want it without ha", tenantView.Router)
			}
			pages, err := routers.List(demo, routers.ListOpts{}).AllPages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tenantRouters, err := routers.ExtractRouters(pages)
			if err != nil {
				t.Fatal(err)
			}
			if len(tenantRouters) != 1 || tenantRouters[0].ID != router.ID {
				t.Errorf("tenant lists routers %+v, want only %s", tenantRouters, router.ID)
			}

			// The tenant wires it: interface, gateway, a floating IP for a VM port.
			iface, err := routers.AddInterface(ctx, demo, router.ID, routers.AddInterfaceOpts{SubnetID: demoSub.ID}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if iface.SubnetID != demoSub.ID || iface.PortID == "" {
				t.Errorf("add_router_interface answered %+v", iface)
			}
			router, err = routers.Update(ctx, demo, router.ID, routers.UpdateOpts{GatewayInfo: &routers.GatewayInfo{NetworkID: ext.ID}}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if router.GatewayInfo.NetworkID != ext.ID || len(router.GatewayInfo.ExternalFixedIPs) != 1 {
				t.Fatalf("gateway %+v, want one address on %s", router.GatewayInfo, ext.ID)
			}
			gatewayIP := router.GatewayInfo.ExternalFixedIPs[0].IPAddress
			vm, err := ports.Create(ctx, demo, ports.CreateOpts{NetworkID: demoNet.ID, Name: "vm"}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			fip, err := floatingips.Create(ctx, demo, floatingips.CreateOpts{FloatingNetworkID: ext.ID, PortID: vm.ID}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if fip.RouterID != router.ID || fip.FixedIP != vm.FixedIPs[0].IPAddress {
				t.Errorf("floating IP %+v, want it routed by %s to %s", fip, router.ID, vm.FixedIPs[0].IPAddress)
			}

			// The admin sees two agents, one active, each hosting the router.
			var active, standby string
			servertest.Eventually(t, haWait, func() error {
				pages, err := routers.ListL3Agents(admin, router.ID).AllPages(ctx)
				if err != nil {
					return err
				}
				l3, err := routers.ExtractL3Agents(pages)
				if err != nil {
					return err
				}
				active, standby = "", ""
				for _, a := range l3 {
					switch a.HAState {
					case "active":
						active = a.Host
					case "standby":
						standby = a.Host
					}
				}
				if len(l3) != 2 || active == "" || standby == "" {
					return fmt.Errorf("l3-agents %+v, want one active and one standby", l3)
				}
				return nil
			})
			pages, err = agents.List(admin, agents.ListOpts{AgentType: agentapi.AgentTypeL3}).AllPages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			l3Agents, err := agents.ExtractAgents(pages)
			if err != nil {
				t.Fatal(err)
			}
			agentOf := map[string]string{}
			for _, a := range l3Agents {
				agentOf[a.Host] = a.ID
				hosted, err := agents.ListL3Routers(ctx, admin, a.ID).Extract()
				if err != nil {
					t.Fatal(err)
				}
				if len(hosted) != 1 || hosted[0].ID != router.ID {
					t.Errorf("agent %s hosts %+v, want router %s", a.Host, hosted, router.ID)
				}
			}
			if len(agentOf) != 2 {
				t.Fatalf("L3 agents %v, want net1 and net2", agentOf)
			}

			// The master's agent is told everything: VRID, HA port, interface, gateway, floating IP.
			spec := c.routerSpec(active, router.ID)
			if spec == nil || spec.VRID < 1 || spec.VRID > 254 || spec.HAPort == nil {
				t.Fatalf("active agent is told %+v, want an HA router with VRID and HA port", spec)
			}
			if len(spec.Interfaces) != 1 || spec.Interfaces[0].ID != iface.PortID || spec.Interfaces[0].DeviceOwner != haOwnerHAIf {
				t.Errorf("interfaces %+v, want port %s as %s", spec.Interfaces, iface.PortID, haOwnerHAIf)
			}
			if spec.Gateway == nil || len(spec.Gateway.FixedIPs) != 1 || spec.Gateway.FixedIPs[0].IPAddress != gatewayIP {
				t.Errorf("gateway %+v, want %s", spec.Gateway, gatewayIP)
			}
			if len(spec.FloatingIPs) != 1 || spec.FloatingIPs[0].FloatingIPAddress != fip.FloatingIP || spec.FloatingIPs[0].FixedIPAddress != fip.FixedIP {
				t.Errorf("floating IPs %+v, want %s → %s", spec.FloatingIPs, fip.FloatingIP, fip.FixedIP)
			}

			// The router's ports follow the master, through a failover.
			portsOn := func(host string) func() error {
				return func() error {
					pages, err := ports.List(admin, ports.ListOpts{DeviceID: router.ID}).AllPages(ctx)
					if err != nil {
						return err
					}
					var ps []gcPort
					if err := ports.ExtractPortsInto(pages, &ps); err != nil {
						return err
					}
					n := 0
					for _, p := range ps {
						if p.DeviceOwner == haOwnerHAPort {
							continue
						}
						n++
						if p.HostID != host {
							return fmt.Errorf("port %s (%s) bound to %q, want %s", p.ID, p.DeviceOwner, p.HostID, host)
						}
					}
					if n != 2 {
						return fmt.Errorf("router has %d interface and gateway ports, want 2", n)
					}
					return nil
				}
			}
			servertest.Eventually(t, haWait, portsOn(active))
			c.setHAState(active, router.ID, agentapi.HAStandby)
			c.setHAState(standby, router.ID, agentapi.HAActive)
			servertest.Eventually(t, haWait, portsOn(standby))

			// The admin moves the router off the (now) backup agent and back.
			if err := agents.RemoveL3Router(ctx, admin, agentOf[active], router.ID).ExtractErr(); err != nil {
				t.Fatal(err)
			}
			if hosts := c.hostsOf(router.ID); !slices.Equal(hosts, []string{standby}) {
				t.Errorf("after removal the router is hosted on %v, want [%s]", hosts, standby)
			}
			if ps := c.haPortsOf(router.ID); len(ps) != 1 {
				t.Errorf("after removal the router has %d HA ports, want 1", len(ps))
			}
			err = agents.RemoveL3Router(ctx, admin, agentOf[active], router.ID).ExtractErr()
			gcWantStatus(t, "removing a router the agent no longer hosts", err, http.StatusNotFound, "RouterNotHostedByL3Agent")
			if err := agents.ScheduleL3Router(ctx, admin, agentOf[active], agents.ScheduleL3RouterOpts{RouterID: router.ID}).ExtractErr(); err != nil {
				t.Fatal(err)
			}
			if hosts := c.hostsOf(router.ID); len(hosts) != 2 {
				t.Errorf("after re-adding the router is hosted on %v, want both agents", hosts)
			}
			err = agents.ScheduleL3Router(ctx, admin, agentOf[active], agents.ScheduleL3RouterOpts{RouterID: router.ID}).ExtractErr()
			gcWantStatus(t, "adding a router the agent already hosts", err, http.StatusConflict, "RouterHostedByL3Agent")

			// Teardown, by the tenant; the HA network goes with the last HA router.
			if err := floatingips.Delete(ctx, demo, fip.ID).ExtractErr(); err != nil {
				t.Fatal(err)
			}
			if _, err := routers.Update(ctx, demo, router.ID, routers.UpdateOpts{GatewayInfo: &routers.GatewayInfo{}}).Extract(); err != nil {
				t.Fatal(err)
			}
			if _, err := routers.RemoveInterface(ctx, demo, router.ID, routers.RemoveInterfaceOpts{SubnetID: demoSub.ID}).Extract(); err != nil {
				t.Fatal(err)
			}
			if err := routers.Delete(ctx, demo, router.ID).ExtractErr(); err != nil {
				t.Fatal(err)
			}
			pages, err = networks.List(admin, networks.ListOpts{Name: "HA network tenant demo"}).AllPages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if left, err := networks.ExtractNetworks(pages); err != nil || len(left) != 0 {
				t.Errorf("HA networks left after the last HA router went: %+v (%v)", left, err)
			}
			pages, err = ports.List(admin, ports.ListOpts{DeviceOwner: haOwnerHAPort}).AllPages(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if left, err := ports.ExtractPorts(pages); err != nil || len(left) != 0 {
				t.Errorf("HA ports left: %+v (%v)", left, err)
			}
			for host := range c.agents {
				servertest.Eventually(t, haWait, func() error {
					if st := c.desiredState(host); len(st.Routers) != 0 {
						return fmt.Errorf("agent %s is still told to run %d routers", host, len(st.Routers))
					}
					return nil
				})
			}
		})
	}
}

// TestGophercloudHAOptionFollowsL3HADefault: through gophercloud with noauth
// identity headers and l3_ha=true, leaving `ha` out (HA nil) gives an HA
// router, an admin's explicit false a legacy one, and a tenant sending `ha`
// at all is refused with 403.
func TestGophercloudHAOptionFollowsL3HADefault(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		name       string
		asAdmin    bool
		ha         *bool
		wantStatus int
		wantHA     bool
	}{
		{name: "admin omits ha", asAdmin: true, ha: nil, wantStatus: http.StatusCreated, wantHA: true},
		{name: "admin sends ha false", asAdmin: true, ha: &no, wantStatus: http.StatusCreated, wantHA: false},
		{name: "admin sends ha true", asAdmin: true, ha: &yes, wantStatus: http.StatusCreated, wantHA: true},
		{name: "tenant omits ha", asAdmin: false, ha: nil, wantStatus: http.StatusCreated, wantHA: true},
		{name: "tenant sends ha false", asAdmin: false, ha: &no, wantStatus: http.StatusForbidden},
		{name: "tenant sends ha true", asAdmin: false, ha: &yes, wantStatus: http.StatusForbidden},
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			c := newHACloud(t, servertest.Options{Backend: backend, DefaultHA: true})
			c.startAgents("net1", "net2")
			admin := gcNetworkClient(c.srv.URL, map[string]string{"X-Project-Id": "admin", "X-Roles": "admin,member,reader"})
			demo := gcNetworkClient(c.srv.URL, map[string]string{"X-Project-Id": "demo", "X-Roles": "member,reader"})
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					client, opts := demo, gcHARouterCreateOpts{CreateOpts: routers.CreateOpts{Name: tc.name}, HA: tc.ha}
					if tc.asAdmin {
						client = admin
						opts.TenantID = "demo"
					}
					router, err := routers.Create(ctx, client, opts).Extract()
					if tc.wantStatus != http.StatusCreated {
						gcWantStatus(t, "create", err, tc.wantStatus, "PolicyNotAuthorized")
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					var flags gcHAFlags
					if err := routers.Get(ctx, admin, router.ID).ExtractIntoStructPtr(&flags, "router"); err != nil {
						t.Fatal(err)
					}
					if flags.HA == nil || *flags.HA != tc.wantHA || flags.Distributed == nil || *flags.Distributed {
						t.Errorf("admin sees ha %v, distributed %v; want ha %v, not distributed", flags.HA, flags.Distributed, tc.wantHA)
					}
					pages, err := routers.ListL3Agents(admin, router.ID).AllPages(ctx)
					if err != nil {
						t.Fatal(err)
					}
					l3, err := routers.ExtractL3Agents(pages)
					if err != nil {
						t.Fatal(err)
					}
					want := 1
					if tc.wantHA {
						want = 2
					}
					if len(l3) != want {
						t.Errorf("router hosted by %d agents, want %d", len(l3), want)
					}
				})
			}
		})
	}
}
