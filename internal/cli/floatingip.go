package cli

import (
	"context"
	"net/http"

	"github.com/spf13/cobra"
)

func (a *app) floatingipCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "floatingip",
		Short: "Manage floating IPs (FIP: id or floating IP address)",
	}
	cmd.AddCommand(
		a.floatingipCreateCmd(), a.floatingipAssociateCmd(), a.floatingipDisassociateCmd(),
		a.floatingipListCmd(), a.floatingipShowCmd(), a.floatingipDeleteCmd(),
	)
	return cmd
}

func (a *app) floatingipCreateCmd() *cobra.Command {
	var port, address string
	cmd := &cobra.Command{
		Use:   "create NETWORK",
		Short: "Allocate a floating IP on an external network",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&port, "port", "", "associate with this port (name or id)")
	cmd.Flags().StringVar(&address, "floating-ip-address", "", "ask for this floating IP address")
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		netID, err := s.resolve(ctx, kindNetwork, args[0])
		if err != nil {
			return err
		}
		fip := map[string]any{"floating_network_id": netID}
		if port != "" {
			portID, err := s.resolve(ctx, kindPort, port)
			if err != nil {
				return err
			}
			fip["port_id"] = portID
		}
		if address != "" {
			fip["floating_ip_address"] = address
		}
		raw, err := s.c.send(ctx, http.MethodPost, kindFloatingIP.collection(), map[string]any{"floatingip": fip}, "floatingip")
		if err != nil {
			return err
		}
		return s.show(raw)
	})
	return cmd
}

func (a *app) floatingipAssociateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "associate FIP PORT",
		Short: "Associate a floating IP with a port",
		Args:  cobra.ExactArgs(2),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		fipID, err := s.resolve(ctx, kindFloatingIP, args[0])
		if err != nil {
			return err
		}
		portID, err := s.resolve(ctx, kindPort, args[1])
		if err != nil {
			return err
		}
		return s.updateFloatingIP(ctx, fipID, portID, "Associated floating IP "+args[0])
	})
	return cmd
}

func (a *app) floatingipDisassociateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disassociate FIP",
		Short: "Disassociate a floating IP from its port",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		fipID, err := s.resolve(ctx, kindFloatingIP, args[0])
		if err != nil {
			return err
		}
		return s.updateFloatingIP(ctx, fipID, nil, "Disassociated floating IP "+args[0])
	})
	return cmd
}

// updateFloatingIP sets the port of a floating IP (nil: none).
func (s *session) updateFloatingIP(ctx context.Context, fipID string, portID any, msg string) error {
	body := map[string]any{"floatingip": map[string]any{"port_id": portID}}
	raw, err := s.c.send(ctx, http.MethodPut, kindFloatingIP.path(fipID), body, "floatingip")
	if err != nil {
		return err
	}
	if s.json() {
		return printJSON(s.out, raw)
	}
	s.say("%s", msg)
	return nil
}

func (a *app) floatingipListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List floating IPs",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, _ []string) error {
		raw, err := s.c.get(ctx, kindFloatingIP.collection(), nil, "floatingips")
		if err != nil {
			return err
		}
		return s.list(raw, []column{col("id"), col("floating_ip_address"), col("fixed_ip_address"), col("port_id")}, nil)
	})
	return cmd
}

func (a *app) floatingipShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show FIP",
		Short: "Show a floating IP",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.showOne(ctx, kindFloatingIP, args[0])
	})
	return cmd
}

func (a *app) floatingipDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete FIP...",
		Short: "Release floating IPs",
		Args:  cobra.MinimumNArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, args []string) error {
		return s.deleteAll(ctx, kindFloatingIP, args)
	})
	return cmd
}
