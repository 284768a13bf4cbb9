package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) routerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Manage routers",
	}
	cmd.AddCommand(
		a.routerCreateCmd(), a.routerListCmd(), a.routerShowCmd(), a.routerUpdateCmd(), a.routerDeleteCmd(),
		a.routerInterfaceCmd(true), a.routerInterfaceCmd(false),
		a.routerSetGatewayCmd(), a.routerClearGatewayCmd(), a.routerAgentsCmd(), a.routerHistoryCmd(), a.routerSwitchoverCmd(),
	)
	return cmd
}

// haFlags adds --ha/--no-ha and returns a function giving the value to send
// (nil when neither flag was given: the server's l3_ha default applies).
func haFlags(cmd *cobra.Command) func() any {
	var ha, noHA bool
	cmd.Flags().BoolVar(&ha, "ha", false, "make the router highly available (admin)")
	cmd.Flags().BoolVar(&noHA, "no-ha", false, "make the router a legacy (non-HA) router (admin)")
	cmd.MarkFlagsMutuallyExclusive("ha", "no-ha")
	return func() any {
		switch {
		case ha:
			return true
		case noHA:
			return false
		}
		return nil
	}
}

func (a *app) routerCreateCmd() *cobra.Command {
	var distributed bool
	cmd := &cobra.Command{
		Use:   "create [--ha|--no-ha] [--distributed] NAME",
		Short: "Create a router",
		Args:  cobra.ExactArgs(1),
	}
	haValue := haFlags(cmd)
	cmd.Flags().BoolVar(&distributed, "distributed", false, "make the router distributed (admin)")
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		r := map[string]any{"name": args[0]}
		if v := haValue(); v != nil {
			r["ha"] = v
		}
		if distributed {
			r["distributed"] = true
		}
		raw, err := s.c.send(ctx, http.MethodPost, kindRouter.collection(), map[string]any{"router": r}, "router")
		if err != nil {
			return err
		}
		return s.show(raw)
	})
	return cmd
}

func (a *app) routerListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List routers",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, _ []string) error {
		raw, err := s.c.get(ctx, kindRouter.collection(), nil, "routers")
		if err != nil {
			return err
		}
		cols := []column{col("id"), col("name"), col("status"), col("admin_state_up")}
		// "ha" is admin-only: show it only when the server showed it.
		withHA := func(rows []map[string]any) []column {
			for _, r := range rows {
				if _, ok := r["ha"]; ok {
					return []column{col("ha")}
				}
			}
			return nil
		}
		return s.list(raw, cols, withHA)
	})
	return cmd
}

func (a *app) routerShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show ROUTER",
		Short: "Show a router (by name or id)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.showOne(ctx, kindRouter, args[0])
	})
	return cmd
}

func (a *app) routerUpdateCmd() *cobra.Command {
	var (
		name            string
		enable, disable bool
		routes          []string
		noRoute         bool
	)
	cmd := &cobra.Command{
		Use:   "update ROUTER",
		Short: "Update a router",
		Long: "Update a router. --route replaces the router's static routes with the ones given;\n" +
			"--no-route removes them all. Changing --ha/--no-ha needs the router to be\n" +
			"administratively down (add --disable, then update --enable afterwards).",
		Args: cobra.ExactArgs(1),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "new name")
	f.BoolVar(&enable, "enable", false, "set the router administratively up")
	f.BoolVar(&disable, "disable", false, "set the router administratively down")
	haValue := haFlags(cmd)
	f.StringArrayVar(&routes, "route", nil, "static route destination=CIDR,gateway=IP (repeatable; replaces existing routes)")
	f.BoolVar(&noRoute, "no-route", false, "remove all static routes")
	cmd.MarkFlagsMutuallyExclusive("enable", "disable")
	cmd.MarkFlagsMutuallyExclusive("route", "no-route")
	cmd.RunE = a.run(func(ctx context.Context, s *session, cmd *cobra.Command, args []string) error {
		r := map[string]any{}
		if cmd.Flags().Changed("name") {
			r["name"] = name
		}
		switch {
		case enable:
			r["admin_state_up"] = true
		case disable:
			r["admin_state_up"] = false
		}
		if v := haValue(); v != nil {
			r["ha"] = v
		}
		switch {
		case noRoute:
			r["routes"] = []any{}
		case len(routes) > 0:
			rs := make([]map[string]string, 0, len(routes))
			for _, rt := range routes {
				route, err := parseRoute(rt)
				if err != nil {
					return err
				}
				rs = append(rs, route)
			}
			r["routes"] = rs
		}
		if len(r) == 0 {
			return fmt.Errorf("nothing to update: give --name, --enable/--disable, --ha/--no-ha, --route or --no-route")
		}
		id, err := s.resolve(ctx, kindRouter, args[0])
		if err != nil {
			return err
		}
		raw, err := s.c.send(ctx, http.MethodPut, kindRouter.path(id), map[string]any{"router": r}, "router")
		if err != nil {
			return err
		}
		return s.show(raw)
	})
	return cmd
}

// parseRoute parses destination=CIDR,gateway=IP (nexthop= is accepted for
// gateway=, as the neutron client spelt it) into a Neutron route.
func parseRoute(s string) (map[string]string, error) {
	kv, err := parseKV("--route", s, []string{"destination", "gateway", "nexthop"}, []string{"destination"})
	if err != nil {
		return nil, err
	}
	gw, hasGW := kv["gateway"]
	nh, hasNH := kv["nexthop"]
	switch {
	case hasGW && hasNH:
		return nil, fmt.Errorf("invalid --route %q: give gateway= or nexthop=, not both", s)
	case hasNH:
		gw = nh
	case !hasGW:
		return nil, fmt.Errorf("invalid --route %q: missing \"gateway\" (want destination=CIDR,gateway=IP)", s)
	}
	return map[string]string{"destination": kv["destination"], "nexthop": gw}, nil
}

func (a *app) routerDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete ROUTER...",
		Short: "Delete routers (by name or id)",
		Args:  cobra.MinimumNArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.deleteAll(ctx, kindRouter, args)
	})
	return cmd
}

// routerInterfaceCmd builds add-interface (add) or remove-interface.
func (a *app) routerInterfaceCmd(add bool) *cobra.Command {
	verb, action := "remove-interface", "remove_router_interface"
	short := "Remove an interface (a subnet, or port=PORT) from a router"
	if add {
		verb, action = "add-interface", "add_router_interface"
		short = "Add an interface on a subnet (or port=PORT) to a router"
	}
	cmd := &cobra.Command{
		Use:   verb + " ROUTER SUBNET",
		Short: short,
		Long: short + ".\nSUBNET is a subnet name or id; subnet=SUBNET and port=PORT are also accepted\n" +
			"as with the neutron client.",
		Args: cobra.ExactArgs(2),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		k, key, ref := kindSubnet, "subnet_id", args[1]
		if v, ok := strings.CutPrefix(ref, "port="); ok {
			k, key, ref = kindPort, "port_id", v
		} else if v, ok := strings.CutPrefix(ref, "subnet="); ok {
			ref = v
		}
		routerID, err := s.resolve(ctx, kindRouter, args[0])
		if err != nil {
			return err
		}
		id, err := s.resolve(ctx, k, ref)
		if err != nil {
			return err
		}
		raw, err := s.c.send(ctx, http.MethodPut, kindRouter.path(routerID)+"/"+action, map[string]any{key: id}, "")
		if err != nil {
			return err
		}
		if s.json() {
			return printJSON(s.out, raw)
		}
		if add {
			var info struct {
				PortID string `json:"port_id"`
			}
			_ = json.Unmarshal(raw, &info)
			s.say("Added interface %s to router %s.", info.PortID, args[0])
		} else {
			s.say("Removed interface from router %s.", args[0])
		}
		return nil
	})
	return cmd
}

func (a *app) routerSetGatewayCmd() *cobra.Command {
	var disableSNAT bool
	cmd := &cobra.Command{
		Use:   "set-gateway ROUTER NETWORK",
		Short: "Set the external gateway of a router to an external network",
		Args:  cobra.ExactArgs(2),
	}
	cmd.Flags().BoolVar(&disableSNAT, "disable-snat", false, "disable source NAT on the gateway (admin)")
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		routerID, err := s.resolve(ctx, kindRouter, args[0])
		if err != nil {
			return err
		}
		netID, err := s.resolve(ctx, kindNetwork, args[1])
		if err != nil {
			return err
		}
		gw := map[string]any{"network_id": netID}
		if disableSNAT {
			gw["enable_snat"] = false
		}
		return s.updateGateway(ctx, routerID, gw, "Set gateway for router "+args[0])
	})
	return cmd
}

func (a *app) routerClearGatewayCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clear-gateway ROUTER",
		Short: "Remove the external gateway of a router",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		routerID, err := s.resolve(ctx, kindRouter, args[0])
		if err != nil {
			return err
		}
		return s.updateGateway(ctx, routerID, map[string]any{}, "Removed gateway from router "+args[0])
	})
	return cmd
}

func (s *session) updateGateway(ctx context.Context, routerID string, gw map[string]any, msg string) error {
	body := map[string]any{"router": map[string]any{"external_gateway_info": gw}}
	raw, err := s.c.send(ctx, http.MethodPut, kindRouter.path(routerID), body, "router")
	if err != nil {
		return err
	}
	if s.json() {
		return printJSON(s.out, raw)
	}
	s.say("%s", msg)
	return nil
}

func (a *app) routerAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents ROUTER",
		Short: "List the L3 agents hosting a router, with their HA state (admin)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		routerID, err := s.resolve(ctx, kindRouter, args[0])
		if err != nil {
			return err
		}
		raw, err := s.c.get(ctx, kindRouter.path(routerID)+"/l3-agents", nil, "agents")
		if err != nil {
			return err
		}
		return s.list(raw, []column{
			col("id"), col("host"), col("admin_state_up"),
			{header: "alive", key: "alive", format: formatAlive},
			col("ha_state"),
		}, nil)
	})
	return cmd
}

func (a *app) routerHistoryCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history [--limit N] ROUTER",
		Short: "List a router's HA transitions, oldest first, with their reasons (admin)",
		Long: "List the HA transitions of a router's bindings that the server recorded\n" +
			"(GET /v2.0/routers/{id}/ha_transitions), oldest first: when, on which host,\n" +
			"from and to which ha_state, and why (startup, peer_lost, peer_resigned,\n" +
			"split_brain, admin_down, restart_adopted, ...; empty when not known).\n" +
			"--limit N shows the newest N.",
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "show only the newest N transitions (0: all the server keeps)")
	cmd.RunE = a.run(func(ctx context.Context, s *session, cmd *cobra.Command, args []string) error {
		routerID, err := s.resolve(ctx, kindRouter, args[0])
		if err != nil {
			return err
		}
		var q url.Values
		if cmd.Flags().Changed("limit") {
			q = url.Values{"limit": {strconv.Itoa(limit)}}
		}
		raw, err := s.c.get(ctx, kindRouter.path(routerID)+"/ha_transitions", q, "ha_transitions")
		if err != nil {
			return err
		}
		return s.list(raw, []column{col("at"), col("host"), col("from"), col("to"), col("reason"), col("agent_id")}, nil)
	})
	return cmd
}

func (a *app) routerSwitchoverCmd() *cobra.Command {
	var host string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "switchover ROUTER --to-host HOST [--wait 15s]",
		Short: "Move an HA router's master to the agent on HOST, without loss (admin)",
		Long: "Ask the server to move the router's VRRP master to its agent on HOST\n" +
			"(POST /v2.0/routers/{id}/switchover). The new master holds the router's\n" +
			"addresses before the old one drops them, and stays master afterwards.\n" +
			"Then wait up to --wait until the API shows HOST active (0: do not wait).\n" +
			"With the native VRRP driver the move takes one advert round trip; with\n" +
			"the keepalived driver see the README (Operator controls).",
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&host, "to-host", "", "host of the L3 agent that must become the master (required)")
	cmd.Flags().DurationVar(&wait, "wait", 15*time.Second, "how long to wait for the API to show HOST active (0: return at once)")
	_ = cmd.MarkFlagRequired("to-host")
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		routerID, err := s.resolve(ctx, kindRouter, args[0])
		if err != nil {
			return err
		}
		agents, err := s.routerAgents(ctx, routerID)
		if err != nil {
			return err
		}
		var agentID string
		var hosts []string
		for _, ag := range agents {
			hosts = append(hosts, ag.Host)
			if ag.Host == host {
				agentID = ag.ID
			}
		}
		if agentID == "" {
			return fmt.Errorf("router %s has no L3 agent on host %q (its agents are on: %s)", routerID, host, strings.Join(hosts, ", "))
		}
		raw, err := s.c.send(ctx, http.MethodPost, kindRouter.path(routerID)+"/switchover", map[string]any{"agent_id": agentID}, "switchover")
		if err != nil {
			return err
		}
		if wait <= 0 || s.json() {
			return s.show(raw)
		}
		s.say("switchover of router %s to %s requested; waiting for %s to be active", routerID, host, host)
		deadline := time.Now().Add(wait)
		for {
			agents, err := s.routerAgents(ctx, routerID)
			if err != nil {
				return err
			}
			var states []string
			done := false
			for _, ag := range agents {
				states = append(states, ag.Host+"="+ag.HAState)
				if ag.Host == host && ag.HAState == "active" {
					done = true
				}
			}
			active := 0
			for _, ag := range agents {
				if ag.HAState == "active" {
					active++
				}
			}
			if done && active == 1 {
				s.say("router %s: master on %s (%s)", routerID, host, strings.Join(states, " "))
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("router %s: %s is not the only active agent after %s (%s); see 'l3ha router history %s'",
					routerID, host, wait, strings.Join(states, " "), routerID)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	return cmd
}

// hostingAgent is one agent of a router as l3-agents shows it.
type hostingAgent struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	HAState string `json:"ha_state"`
}

// routerAgents lists the router's agents (GET /v2.0/routers/{id}/l3-agents).
func (s *session) routerAgents(ctx context.Context, routerID string) ([]hostingAgent, error) {
	raw, err := s.c.get(ctx, kindRouter.path(routerID)+"/l3-agents", nil, "agents")
	if err != nil {
		return nil, err
	}
	var agents []hostingAgent
	if err := json.Unmarshal(raw, &agents); err != nil {
		return nil, fmt.Errorf("reading the agents of router %s: %w", routerID, err)
	}
	return agents, nil
}
