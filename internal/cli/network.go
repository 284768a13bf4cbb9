package cli

import (
	"context"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

func (a *app) networkCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Manage networks",
	}
	cmd.AddCommand(a.networkCreateCmd(), a.networkListCmd(), a.networkShowCmd(), a.networkDeleteCmd())
	return cmd
}

func (a *app) networkCreateCmd() *cobra.Command {
	var (
		external         bool
		netType, physnet string
		segment          int
		disable          bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a network",
		Args:  cobra.ExactArgs(1),
	}
	f := cmd.Flags()
	f.BoolVar(&external, "external", false, "make the network external (router:external), usable as a router gateway")
	f.StringVar(&netType, "provider-network-type", "", "provider:network_type: vxlan or flat (admin)")
	f.StringVar(&physnet, "provider-physical-network", "", "provider:physical_network (admin; flat networks)")
	f.IntVar(&segment, "provider-segment", 0, "provider:segmentation_id, the VXLAN VNI (admin)")
	f.BoolVar(&disable, "disable", false, "create the network administratively down")
	cmd.RunE = a.run(func(ctx context.Context, s *session, cmd *cobra.Command, args []string) error {
		net := map[string]any{"name": args[0]}
		if external {
			net["router:external"] = true
		}
		if cmd.Flags().Changed("provider-network-type") {
			switch netType {
			case "vxlan", "flat":
			default:
				return fmt.Errorf("invalid --provider-network-type %q: want vxlan or flat", netType)
			}
			net["provider:network_type"] = netType
		}
		if cmd.Flags().Changed("provider-physical-network") {
			net["provider:physical_network"] = physnet
		}
		if cmd.Flags().Changed("provider-segment") {
			net["provider:segmentation_id"] = segment
		}
		if disable {
			net["admin_state_up"] = false
		}
		raw, err := s.c.send(ctx, http.MethodPost, kindNetwork.collection(), map[string]any{"network": net}, "network")
		if err != nil {
			return err
		}
		return s.show(raw)
	})
	return cmd
}

func (a *app) networkListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List networks",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, _ []string) error {
		raw, err := s.c.get(ctx, kindNetwork.collection(), nil, "networks")
		if err != nil {
			return err
		}
		return s.list(raw, []column{col("id"), col("name"), col("subnets")}, nil)
	})
	return cmd
}

func (a *app) networkShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NETWORK",
		Short: "Show a network (by name or id)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.showOne(ctx, kindNetwork, args[0])
	})
	return cmd
}

func (a *app) networkDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NETWORK...",
		Short: "Delete networks (by name or id)",
		Args:  cobra.MinimumNArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.deleteAll(ctx, kindNetwork, args)
	})
	return cmd
}

// showOne resolves arg and prints the resource.
func (s *session) showOne(ctx context.Context, k kind, arg string) error {
	id, err := s.resolve(ctx, k, arg)
	if err != nil {
		return err
	}
	raw, err := s.c.get(ctx, k.path(id), nil, k.singular)
	if err != nil {
		return err
	}
	return s.show(raw)
}
