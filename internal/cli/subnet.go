package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) subnetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "subnet",
		Short: "Manage subnets",
	}
	cmd.AddCommand(a.subnetCreateCmd(), a.subnetListCmd(), a.subnetShowCmd(), a.subnetDeleteCmd())
	return cmd
}

func (a *app) subnetCreateCmd() *cobra.Command {
	var (
		network, cidr, gateway, name string
		pools                        []string
		noDHCP                       bool
	)
	cmd := &cobra.Command{
		Use:   "create --network NETWORK --subnet-range CIDR [NAME]",
		Short: "Create an IPv4 subnet",
		Args:  cobra.MaximumNArgs(1),
	}
	f := cmd.Flags()
	f.StringVar(&network, "network", "", "network the subnet belongs to (name or id)")
	f.StringVar(&cidr, "subnet-range", "", "subnet range in CIDR notation, e.g. 10.0.0.0/24")
	f.StringVar(&gateway, "gateway", "auto", "gateway address, 'auto' (the server picks the first address) or 'none'")
	f.StringArrayVar(&pools, "allocation-pool", nil, "allocation pool start=IP,end=IP (repeatable)")
	f.BoolVar(&noDHCP, "no-dhcp", false, "disable DHCP")
	f.StringVar(&name, "name", "", "subnet name")
	_ = cmd.MarkFlagRequired("network")
	_ = cmd.MarkFlagRequired("subnet-range")
	cmd.RunE = a.run(func(ctx context.Context, s *session, cmd *cobra.Command, args []string) error {
		if len(args) == 1 {
			if cmd.Flags().Changed("name") && name != args[0] {
				return fmt.Errorf("name given twice: %q and --name %q", args[0], name)
			}
			name = args[0]
		}
		sub := map[string]any{"ip_version": 4, "cidr": cidr}
		if name != "" {
			sub["name"] = name
		}
		switch strings.ToLower(gateway) {
		case "auto", "":
		case "none":
			sub["gateway_ip"] = nil
		default:
			sub["gateway_ip"] = gateway
		}
		if len(pools) > 0 {
			var ps []map[string]string
			for _, p := range pools {
				kv, err := parseKV("--allocation-pool", p, []string{"start", "end"}, []string{"start", "end"})
				if err != nil {
					return err
				}
				ps = append(ps, map[string]string{"start": kv["start"], "end": kv["end"]})
			}
			sub["allocation_pools"] = ps
		}
		if noDHCP {
			sub["enable_dhcp"] = false
		}
		netID, err := s.resolve(ctx, kindNetwork, network)
		if err != nil {
			return err
		}
		sub["network_id"] = netID
		raw, err := s.c.send(ctx, http.MethodPost, kindSubnet.collection(), map[string]any{"subnet": sub}, "subnet")
		if err != nil {
			return err
		}
		return s.show(raw)
	})
	return cmd
}

func (a *app) subnetListCmd() *cobra.Command {
	var network string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List subnets",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&network, "network", "", "only subnets of this network (name or id)")
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, _ []string) error {
		var q url.Values
		if network != "" {
			id, err := s.resolve(ctx, kindNetwork, network)
			if err != nil {
				return err
			}
			q = url.Values{"network_id": {id}}
		}
		raw, err := s.c.get(ctx, kindSubnet.collection(), q, "subnets")
		if err != nil {
			return err
		}
		return s.list(raw, []column{col("id"), col("name"), col("network_id"), col("cidr")}, nil)
	})
	return cmd
}

func (a *app) subnetShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show SUBNET",
		Short: "Show a subnet (by name or id)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.showOne(ctx, kindSubnet, args[0])
	})
	return cmd
}

func (a *app) subnetDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete SUBNET...",
		Short: "Delete subnets (by name or id)",
		Args:  cobra.MinimumNArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.deleteAll(ctx, kindSubnet, args)
	})
	return cmd
}

// parseKV parses "k1=v1,k2=v2" as used by --allocation-pool and --route.
// Keys outside allowed are an error, as are missing required keys, repeated
// keys and empty values.
func parseKV(flag, s string, allowed, required []string) (map[string]string, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok || k == "" || v == "":
			return nil, fmt.Errorf("invalid %s %q: want %s", flag, s, kvHint(required))
		case !slices.Contains(allowed, k):
			return nil, fmt.Errorf("invalid %s %q: unknown key %q (want %s)", flag, s, k, kvHint(required))
		}
		if _, dup := kv[k]; dup {
			return nil, fmt.Errorf("invalid %s %q: %q given twice", flag, s, k)
		}
		kv[k] = v
	}
	for _, k := range required {
		if _, ok := kv[k]; !ok {
			return nil, fmt.Errorf("invalid %s %q: missing %q (want %s)", flag, s, k, kvHint(required))
		}
	}
	return kv, nil
}

func kvHint(keys []string) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=VALUE"
	}
	return strings.Join(parts, ",")
}
