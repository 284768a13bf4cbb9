package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/l3ha/l3ha/internal/server"
)

func newServerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Neutron-compatible API server, scheduler and agent endpoint",
		Args:  cobra.NoArgs,
	}
	opts := server.RegisterFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		level := new(slog.LevelVar)
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
		cfg, err := server.Load(opts, log)
		if err != nil {
			return err
		}
		if cfg.Debug {
			level.Set(slog.LevelDebug)
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		srv, err := server.New(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer srv.Close()
		return srv.Serve(ctx)
	}
	_ = context.Background
	return cmd
}
