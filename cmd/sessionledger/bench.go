package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/sessionledger/sessionledger/internal/bench"
)

// benchCmd drives a ledger over HTTP (internal/bench): clients concurrent
// clients, each owning sessions and chaining its refresh tokens, then the two
// reference points on the same machine and at the same concurrency.
func benchCmd(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	var cfg bench.Config
	var natsSync string
	var asJSON bool
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", "", "the ledger to drive (default: start one in-process on a temporary data dir)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "admin token of --url (default $SESSIONLEDGER_ADMIN_TOKEN)")
	addNATSFlags(fs, &cfg.NATSURL, &cfg.NATSAuth, "", "NATS of --url, for the bare-append reference, with the ledger's credentials (default: the in-process ledger's)")
	fs.IntVar(&cfg.Clients, "clients", 64, "concurrent clients")
	fs.IntVar(&cfg.Sessions, "sessions", 1, "sessions per client")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to refresh (and to run each reference)")
	fs.StringVar(&natsSync, "nats-sync", "", `in-process ledger only: JetStream sync interval ("always" to fsync every write)`)
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args, lookupEnv); err != nil {
		return err
	}
	if cfg.Clients < 1 || cfg.Sessions < 1 || cfg.Duration <= 0 {
		return errors.New("bench: --clients, --sessions and --duration must be positive")
	}
	if cfg.URL == "" {
		stop, err := startBenchLedger(ctx, &cfg, natsSync)
		if err != nil {
			return err
		}
		defer stop()
	} else if cfg.AdminToken == "" || cfg.NATSURL == "" {
		return errors.New("bench: with --url, give --admin-token (or SESSIONLEDGER_ADMIN_TOKEN) and --nats-url")
	}
	r, err := bench.Run(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	bench.Print(stdout, r)
	return nil
}

// startBenchLedger runs a ledger in-process on a temporary data dir.
func startBenchLedger(ctx context.Context, cfg *bench.Config, natsSync string) (func(), error) {
	dir, err := os.MkdirTemp("", "sessionledger-bench")
	if err != nil {
		return nil, err
	}
	c := DefaultConfig()
	c.HTTPAddr, c.NATSListen, c.DataDir, c.AdminToken = "127.0.0.1:0", "127.0.0.1:-1", dir, "bench-admin-token-0123456789abcdef"
	c.NATSSync = natsSync
	m := NewMain(c, slog.New(slog.DiscardHandler))
	stop := func() { m.Close(); os.RemoveAll(dir) }
	err = c.complete()
	if err == nil {
		m.Config = c
		err = m.Run(ctx)
	}
	if err == nil {
		err = m.WaitReady(ctx)
	}
	if err != nil {
		stop()
		return nil, err
	}
	cfg.URL, cfg.AdminToken, cfg.Dial = m.HTTPURL(), c.AdminToken, m.embedded.Connect
	return stop, nil
}
