// Package cli is the l3ha command-line client of the Neutron v2.0 API.
//
// It adds the client verbs (network, subnet, router, floatingip and
// "agent list") to the l3ha root command. Every verb talks HTTP to an l3ha
// server (or any Neutron v2.0 endpoint) through a small client with a
// context and a timeout on every call; API errors are printed with Neutron's
// own message and make the command fail.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Environment variables that give the global flags their defaults.
const (
	envURL      = "L3HA_URL"
	envToken    = "L3HA_TOKEN"
	envProject  = "L3HA_PROJECT"
	envRoles    = "L3HA_ROLES"
	envCACert   = "L3HA_CACERT"
	envOSCACert = "OS_CACERT"

	defaultURL = "http://127.0.0.1:9696"
)

// app holds the values of the global flags of one command tree.
type app struct {
	url, token, project, roles, output, caCert string
}

// Register adds the client commands to root: network, subnet, router,
// floatingip, plus "list" under agentCmd (agentCmd is the daemon command
// "l3ha agent", owned elsewhere; it has its own Run and flags — add a
// subcommand "list" to it, do not change its Run).
func Register(root *cobra.Command, agentCmd *cobra.Command) {
	a := &app{}
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", envOr(envURL, defaultURL), "l3ha/Neutron API endpoint (env "+envURL+")")
	pf.StringVar(&a.token, "token", os.Getenv(envToken), "token sent as X-Auth-Token (env "+envToken+")")
	pf.StringVar(&a.project, "project", os.Getenv(envProject), "project sent as X-Project-Id, for the server's noauth mode (env "+envProject+")")
	pf.StringVar(&a.roles, "roles", os.Getenv(envRoles), "comma-separated roles sent as X-Roles, for the server's noauth mode (env "+envRoles+")")
	pf.StringVar(&a.caCert, "ca-cert", envOr(envCACert, os.Getenv(envOSCACert)), "PEM file of the CA(s) that signed the server's certificate, for https URLs (env "+envCACert+" or "+envOSCACert+"; default: the system's roots)")
	pf.StringVarP(&a.output, "output", "o", formatTable, "output format: table|json")

	root.AddCommand(a.networkCmd(), a.subnetCmd(), a.routerCmd(), a.floatingipCmd())
	if agentCmd != nil {
		agentCmd.AddCommand(a.agentListCmd())
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// session is what one command invocation works with.
type session struct {
	c      *client
	out    io.Writer
	errOut io.Writer
	format string
}

func (s *session) json() bool { return s.format == formatJSON }

// say prints an informational line; it is left out of JSON output.
func (s *session) say(format string, args ...any) {
	if !s.json() {
		fmt.Fprintf(s.out, format+"\n", args...)
	}
}

// flagValue returns the value of a global flag as cobra parsed it for cmd. A
// command may have inherited a same-named persistent flag from a nearer parent
// (e.g. a --token of "l3ha agent"); whatever the user typed is what counts.
func flagValue(cmd *cobra.Command, name, fallback string) string {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f.Value.String()
	}
	return fallback
}

func (a *app) session(cmd *cobra.Command) (*session, error) {
	format := flagValue(cmd, "output", a.output)
	if format != formatTable && format != formatJSON {
		return nil, fmt.Errorf("invalid --output %q: want table or json", format)
	}
	c, err := newClient(
		flagValue(cmd, "url", a.url),
		flagValue(cmd, "token", a.token),
		flagValue(cmd, "project", a.project),
		flagValue(cmd, "roles", a.roles),
		flagValue(cmd, "ca-cert", a.caCert),
	)
	if err != nil {
		return nil, err
	}
	return &session{c: c, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(), format: format}, nil
}

// run adapts a verb to cobra: it builds the session, runs the verb with the
// command's context, and on failure prints the error (Neutron's message for
// API errors) to the command's error output and returns it so that the
// process exits non-zero. Usage is not printed for such errors.
func (a *app) run(fn func(ctx context.Context, s *session, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cmd.SilenceUsage = true
		ctx := cmd.Context()
		if ctx == nil {
			ctx = context.Background()
		}
		s, err := a.session(cmd)
		if err == nil {
			err = fn(ctx, s, cmd, args)
		}
		if err != nil {
			cmd.SilenceErrors = true
			fmt.Fprintln(cmd.ErrOrStderr(), renderError(err))
			return printedError{err}
		}
		return nil
	}
}

// printedError is an error the client has already shown to the user.
type printedError struct{ error }

func (p printedError) Unwrap() error { return p.error }

// Printed reports whether err was already printed by a client verb, so that
// main does not print it twice.
func Printed(err error) bool {
	var p printedError
	return errors.As(err, &p)
}

// show prints one resource: JSON as returned, or a Field/Value table.
func (s *session) show(raw json.RawMessage) error {
	if s.json() {
		return printJSON(s.out, raw)
	}
	obj, err := decodeObject(raw)
	if err != nil {
		return err
	}
	return printFields(s.out, obj)
}

// list prints resources: the JSON array as returned, or a table of cols.
// extra, when not nil, may add columns after looking at the rows.
func (s *session) list(raw json.RawMessage, cols []column, extra func([]map[string]any) []column) error {
	if s.json() {
		return printJSON(s.out, raw)
	}
	rows, err := decodeList(raw)
	if err != nil {
		return err
	}
	if extra != nil {
		cols = append(cols, extra(rows)...)
	}
	return printTable(s.out, cols, rows)
}

// deleteAll deletes each named resource, going on after a failure the way the
// openstack client does, and fails if any failed.
func (s *session) deleteAll(ctx context.Context, k kind, args []string) error {
	failed := 0
	for _, arg := range args {
		id, err := s.resolve(ctx, k, arg)
		if err == nil {
			err = s.c.del(ctx, k.path(id))
		}
		if err != nil {
			failed++
			if len(args) > 1 {
				fmt.Fprintf(s.errOut, "Failed to delete %s %s: %s\n", k.singular, arg, renderError(err))
				continue
			}
			return err
		}
		s.say("Deleted %s: %s", k.singular, arg)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %s failed to delete", failed, len(args), k.plural)
	}
	return nil
}
