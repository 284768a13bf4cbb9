// Command l3ha is the single binary of l3ha: `l3ha server`, `l3ha agent`,
// and the API client verbs (`l3ha router …`, `l3ha network …`).
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/l3ha/l3ha/internal/cli"
)

func main() {
	root := &cobra.Command{
		Use:           "l3ha",
		Short:         "Highly available virtual routers with a Neutron-compatible API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	agent := newAgentCommand()
	root.AddCommand(newServerCommand(), agent, newNeutronAgentCommand())
	root.AddCommand(newLabCommand())
	cli.Register(root, agent)
	if err := root.Execute(); err != nil {
		// Client verbs print their own errors; daemons return theirs here.
		if !cli.Printed(err) {
			root.PrintErrln("Error:", err)
		}
		os.Exit(1)
	}
}
