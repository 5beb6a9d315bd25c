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
	"slices"
	"strings"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/internal/bench"
)

// benchCmd drives a ledger over HTTP (internal/bench). The default scenario,
// refresh: clients concurrent clients, each owning sessions and chaining its
// refresh tokens, then the two reference points on the same machine and at
// the same concurrency. The attack and big-user scenarios run the ledger as a
// child process, to measure its CPU apart from the load generator's.
func benchCmd(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	var cfg bench.Config
	var attack bench.AttackConfig
	var big bench.BigUserConfig
	var scenario, natsSync, signingAlg, binary string
	var pid int
	var asJSON bool
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&scenario, "scenario", "refresh", "refresh, attack (forged refresh tokens against a preloaded ledger) or big-user (one user with many sessions)")
	fs.StringVar(&cfg.URL, "url", "", "the ledger to drive (default: start one, in-process for refresh, as a child process for attack and big-user)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "admin token of --url (default $SESSIONLEDGER_ADMIN_TOKEN)")
	addNATSFlags(fs, &cfg.NATSURL, &cfg.NATSAuth, "", "refresh with --url: NATS of --url, for the bare-append reference, with the ledger's credentials (default: the in-process ledger's)")
	fs.IntVar(&cfg.Clients, "clients", 64, "concurrent clients")
	fs.IntVar(&cfg.Sessions, "sessions", 1, "refresh: sessions per client")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "refresh: how long to refresh (and to run each reference); attack, big-user: each phase")
	fs.StringVar(&natsSync, "nats-sync", "", `the ledger started here only: JetStream sync interval ("always" to fsync every write)`)
	fs.StringVar(&signingAlg, "signing-alg", DefaultConfig().SigningAlg, "the ledger started here only: algorithm of its access-token signing key, "+strings.Join(accesstoken.Algorithms, ", ")+" (RSA 2048)")
	fs.IntVar(&pid, "pid", 0, "attack, big-user with --url: the ledger's process id, to report its CPU (Linux; default: not reported)")
	fs.StringVar(&binary, "server-binary", "", "attack, big-user: the sessionledger binary to run as the ledger (default: this one)")
	fs.IntVar(&attack.Users, "users", 100_000, "attack: users preloaded, one session each")
	fs.IntVar(&attack.Generation, "generation", 10_000, "attack: the generation one session is refreshed to before its generation-0 token is forged")
	fs.IntVar(&attack.ForgedClients, "forged-clients", 16, "attack: concurrent clients sending one kind of forged token alone")
	fs.Float64Var(&attack.ForgedRate, "forged-rate", 1000, "attack: forged requests per second while genuine clients refresh")
	fs.IntVar(&big.Sessions, "user-sessions", 5000, "big-user: sessions of the one user, and users with one session each it is compared with")
	fs.IntVar(&big.OtherClients, "other-clients", 16, "big-user: other users, one session and client each, whose latency is measured meanwhile")
	fs.Float64Var(&big.OtherRate, "other-rate", 200, "big-user: refreshes per second of the other users together")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parseFlags(fs, args, lookupEnv); err != nil {
		return err
	}
	if cfg.Clients < 1 || cfg.Sessions < 1 || cfg.Duration <= 0 {
		return errors.New("bench: --clients, --sessions and --duration must be positive")
	}
	if !slices.Contains(accesstoken.Algorithms, signingAlg) {
		return fmt.Errorf("bench: --signing-alg %q: must be one of %s", signingAlg, strings.Join(accesstoken.Algorithms, ", "))
	}
	if cfg.URL != "" && flagGiven(fs, "signing-alg") {
		return errors.New("bench: --signing-alg sets the ledger bench starts; with --url, the ledger's own --signing-alg decides")
	}
	var r any
	var show func(io.Writer)
	switch scenario {
	case "refresh":
		if cfg.URL == "" {
			stop, err := startBenchLedger(ctx, &cfg, natsSync, signingAlg)
			if err != nil {
				return err
			}
			defer stop()
		} else if cfg.AdminToken == "" || cfg.NATSURL == "" {
			return errors.New("bench: with --url, give --admin-token (or SESSIONLEDGER_ADMIN_TOKEN) and --nats-url")
		}
		res, err := bench.Run(ctx, cfg, stderr)
		if err != nil {
			return err
		}
		r, show = res, func(w io.Writer) { bench.Print(w, res) }
	case "attack", "big-user":
		target, stop, err := benchTarget(ctx, cfg, pid, binary, natsSync, signingAlg, stderr)
		if err != nil {
			return err
		}
		defer stop()
		if scenario == "attack" {
			attack.Target, attack.Clients, attack.Duration = target, cfg.Clients, cfg.Duration
			res, err := bench.RunAttack(ctx, attack, stderr)
			if err != nil {
				return err
			}
			r, show = res, func(w io.Writer) { bench.PrintAttack(w, res) }
		} else {
			big.Target, big.Clients, big.Duration = target, cfg.Clients, cfg.Duration
			res, err := bench.RunBigUser(ctx, big, stderr)
			if err != nil {
				return err
			}
			r, show = res, func(w io.Writer) { bench.PrintBigUser(w, res) }
		}
	default:
		return fmt.Errorf("bench: --scenario %q: want refresh, attack or big-user", scenario)
	}
	if asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	show(stdout)
	return nil
}

// benchTarget is the ledger the attack and big-user scenarios drive: --url
// (its CPU read from --pid, if given), or binary (default: this executable)
// started as a child process on a temporary data dir. stop stops what it
// started.
func benchTarget(ctx context.Context, cfg bench.Config, pid int, binary, natsSync, signingAlg string, log io.Writer) (bench.Target, func(), error) {
	if cfg.URL != "" {
		if cfg.AdminToken == "" {
			return bench.Target{}, nil, errors.New("bench: with --url, give --admin-token (or SESSIONLEDGER_ADMIN_TOKEN)")
		}
		return bench.Target{URL: cfg.URL, AdminToken: cfg.AdminToken, PID: pid}, func() {}, nil
	}
	if binary == "" {
		var err error
		if binary, err = os.Executable(); err != nil {
			return bench.Target{}, nil, err
		}
	}
	var extra []string
	if signingAlg != DefaultConfig().SigningAlg { // a --server-binary older than the flag still runs with the default
		extra = append(extra, "--signing-alg", signingAlg)
	}
	if natsSync != "" {
		extra = append(extra, "--nats-sync", natsSync)
	}
	srv, err := bench.StartServer(ctx, binary, extra...)
	if err != nil {
		return bench.Target{}, nil, err
	}
	fmt.Fprintf(log, "ledger: pid %d, %s %s\n", srv.PID, binary, strings.Join(srv.Args, " "))
	return srv.Target, func() {
		fmt.Fprintf(log, "ledger: %d lines logged (warnings and errors)\n", srv.LogLines())
		srv.Close()
	}, nil
}

// startBenchLedger runs a ledger in-process on a temporary data dir, signing
// access tokens with signingAlg.
func startBenchLedger(ctx context.Context, cfg *bench.Config, natsSync, signingAlg string) (func(), error) {
	dir, err := os.MkdirTemp("", "sessionledger-bench")
	if err != nil {
		return nil, err
	}
	c := DefaultConfig()
	c.HTTPAddr, c.NATSListen, c.DataDir, c.AdminToken = "127.0.0.1:0", "127.0.0.1:-1", dir, "bench-admin-token-0123456789abcdef"
	c.NATSSync, c.SigningAlg = natsSync, signingAlg
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

// flagGiven reports whether the flag name was set on the command line (not
// from the environment).
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
