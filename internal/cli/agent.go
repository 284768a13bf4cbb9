package cli

import (
	"context"
	"net/url"

	"github.com/spf13/cobra"
)

// agentListCmd is "l3ha agent list", added under the daemon command.
func (a *app) agentListCmd() *cobra.Command {
	var host, agentType string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List agents known to the server (admin)",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&host, "host", "", "only agents on this host")
	cmd.Flags().StringVar(&agentType, "agent-type", "", "only agents of this type, e.g. \"L3 agent\"")
	cmd.RunE = a.run(func(ctx context.Context, s *session, _ *cobra.Command, _ []string) error {
		q := url.Values{}
		if host != "" {
			q.Set("host", host)
		}
		if agentType != "" {
			q.Set("agent_type", agentType)
		}
		raw, err := s.c.get(ctx, "/v2.0/agents", q, "agents")
		if err != nil {
			return err
		}
		return s.list(raw, []column{
			col("id"), col("agent_type"), col("host"),
			{header: "alive", key: "alive", format: formatAlive},
			col("admin_state_up"),
		}, nil)
	})
	return cmd
}
