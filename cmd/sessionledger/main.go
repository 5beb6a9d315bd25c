// Command sessionledger runs the session ledger.
//
//	sessionledger serve [flags]
//
// Every flag of every command can also be set as SESSIONLEDGER_<NAME> in the
// environment (for example --http-addr as SESSIONLEDGER_HTTP_ADDR); a flag
// wins. This file and config.go parse; serve.go wires the parts together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/cliflags"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h or --help: the usage is printed, and asking for it is no error
		}
		fmt.Fprintln(os.Stderr, "sessionledger:", err)
		if errors.Is(err, errIntegrity) {
			os.Exit(3)
		}
		os.Exit(2)
	}
}

const usage = `usage: sessionledger <command> [flags]

commands:
  serve   run the ledger (HTTP API, projection, embedded NATS by default)
  tail    follow revocations live (sessions revoked, expired, reuse-revoked; users cut off)
  audit   verify the stream, a session's or user's timeline, the state at an instant, export
  bench   drive a ledger over HTTP and compare with a bare JetStream append and an empty handler
  introspection-clients   add, list or remove the resource servers that may introspect tokens
  admin-tokens            add, list or remove the named admin tokens (rotation without downtime)
  keys                    list a running ledger's keys, or rotate one kind of them

Run "sessionledger <command> -h" for the command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "tail":
		return tail(ctx, args[1:], os.LookupEnv, stdout, stderr)
	case "audit":
		return runAudit(ctx, args[1:], os.LookupEnv, stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], os.LookupEnv, stdout, stderr)
	case "introspection-clients":
		return introspectionClients(ctx, args[1:], os.LookupEnv, stdout, stderr)
	case "admin-tokens":
		return adminTokensCmd(ctx, args[1:], os.LookupEnv, stdout, stderr)
	case "keys":
		return keysCmd(ctx, args[1:], os.LookupEnv, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stderr, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseServeFlags(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	m := NewMain(cfg, newLogger(stderr, cfg.LogLevel))
	if err := m.Run(ctx); err != nil {
		m.Close()
		return err
	}
	<-ctx.Done()
	m.Logger.Info("shutting down")
	return m.Close()
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// envName is the environment variable for a flag: http-addr → SESSIONLEDGER_HTTP_ADDR.
func envName(flagName string) string { return cliflags.EnvName(flagName) }

// parseServeFlags reads the serve flags, taking defaults from the environment.
func parseServeFlags(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP listen address")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", cfg.AdminAddr, `serve the admin API and /metrics on this address only, not on --http-addr (e.g. 127.0.0.1:8090); "" serves everything on --http-addr`)
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory: embedded JetStream store, keys and admin token")
	fs.StringVar(&cfg.NATSListen, "nats-listen", cfg.NATSListen, `client address of the embedded nats-server ("" for in-process only)`)
	addNATSFlags(fs, &cfg.NATSURL, &cfg.NATSAuth, cfg.NATSURL, "use these NATS servers (comma-separated URLs) instead of the embedded one")
	fs.StringVar(&cfg.Issuer, "issuer", cfg.Issuer, "iss of access tokens and base of the metadata URLs (default http://localhost:<http port>)")
	fs.StringVar(&cfg.Audience, "audience", cfg.Audience, "aud of access tokens (default: the issuer)")
	fs.DurationVar(&cfg.ReuseGrace, "reuse-grace", cfg.ReuseGrace, "how long after a rotation the previous refresh token still yields the same successor (0 disables)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "the budget of one request, end to end, after which it is answered 503 with Retry-After; at most half of --reuse-grace (0: 5s, or half of --reuse-grace when that is less)")
	fs.StringVar(&cfg.DefaultPolicy, "default-policy", cfg.DefaultPolicy, "preset for sessions issued without a policy: consumer, high_security, mobile")
	fs.StringVar(&cfg.DefaultClientID, "default-client-id", cfg.DefaultClientID, "client id of sessions issued without one: the client_id claim of their access tokens (RFC 9068)")
	fs.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", cfg.SnapshotInterval, "how often to consider writing a projection snapshot (0 disables)")
	fs.Uint64Var(&cfg.SnapshotMinEvents, "snapshot-min-events", cfg.SnapshotMinEvents, "events applied since the stored snapshot before a new one is written")
	fs.StringVar(&cfg.NATSSync, "nats-sync", cfg.NATSSync, `embedded NATS: JetStream sync interval, a duration or "always" (fsync every write; default: nats-server's, 2m)`)
	fs.Float64Var(&cfg.RateLimit, "rate-limit", 0, "requests per second per client address on /oauth2/token, /oauth2/revoke, /browser/* and /v1/me/* together, per instance (0: off)")
	fs.IntVar(&cfg.RateBurst, "rate-burst", 0, "burst allowed above --rate-limit (default: the rate, at least 1)")
	fs.StringVar(&cfg.TrustedProxyHeader, "trusted-proxy-header", "", "header with the client address set by a trusted proxy, e.g. X-Forwarded-For (its last entry)")
	fs.Func("browser-origins", "turn cookie mode on for browser apps at these origins (comma-separated, exactly scheme://host[:port]; https, or http on localhost): they may sign in, refresh and sign out with an httpOnly refresh cookie, and call the API with CORS", func(v string) error {
		cfg.BrowserOrigins = append(cfg.BrowserOrigins, strings.Split(v, ",")...) // repeated: all of them
		return nil
	})
	fs.StringVar(&cfg.DeliveryAllowHosts, "delivery-allow-hosts", "", "the only hosts webhooks and SSF push streams may be delivered to (comma-separated names, *.example.com for subdomains); empty: any public host. https is required, and private addresses are refused, always")
	fs.BoolVar(&cfg.DeliveryAllowLoopback, "delivery-allow-loopback", false, "let webhooks and SSF push streams be delivered to loopback addresses, over http too (tests and local development only)")
	fs.DurationVar(&cfg.DeliveryRetryFor, "delivery-retry-for", cfg.DeliveryRetryFor, "how long a webhook or SSF push delivery is retried, from when the event was stored, before it is recorded as failed (GET /v1/deliveries/{id}/failures)")
	fs.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "replicas of the stream when the ledger creates it")
	fs.DurationVar(&cfg.CheckpointInterval, "checkpoint-interval", cfg.CheckpointInterval, "how often a signed checkpoint is appended while there are new events (0: never)")
	fs.StringVar(&cfg.SigningAlg, "signing-alg", cfg.SigningAlg, "algorithm of the access-token signing key: EdDSA, ES256 or RS256 (RSA 2048); a change takes effect after --signing-key-prepublish")
	fs.DurationVar(&cfg.SigningKeyRotation, "signing-key-rotation", cfg.SigningKeyRotation, "how long each signing key signs before the next takes over (0: only `sessionledger keys rotate`)")
	fs.DurationVar(&cfg.SigningKeyPrepublish, "signing-key-prepublish", cfg.SigningKeyPrepublish, "how long a new signing key is in the JWKS before it signs; the JWKS max-age is a third of it (at most 5m)")
	fs.DurationVar(&cfg.MaxAccessTokenTTL, "max-access-token-ttl", cfg.MaxAccessTokenTTL, "longest access-token lifetime, whatever the policy asks; a retired signing key stays in the JWKS this long plus 1m after it last signed")
	fs.Uint64Var(&cfg.TrustUntaggedThrough, "trust-untagged-through", 0, "accept events without an integrity tag up to this stream sequence: a stream written by a ledger older than tags, which you vouch for")
	fs.TextVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn, error")

	if err := parseFlags(fs, args, lookupEnv, serveEnv...); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	if v, ok := lookupEnv("SESSIONLEDGER_ADMIN_TOKEN"); ok {
		cfg.AdminToken = v
	}
	if v, ok := lookupEnv("SESSIONLEDGER_KEYS"); ok {
		cfg.Keys = v
	}
	if v, ok := lookupEnv("SESSIONLEDGER_INTROSPECTION_CLIENTS"); ok {
		cfg.IntrospectionClients = &v
	}
	if v, ok := lookupEnv("SESSIONLEDGER_ADMIN_TOKENS"); ok {
		cfg.AdminTokens = &v
	}
	return cfg, cfg.complete()
}

// serveEnv are the variables serve reads that are no flag's.
var serveEnv = []cliflags.EnvVar{
	{Name: "SESSIONLEDGER_ADMIN_TOKEN", Usage: "the admin token named default (default: <data-dir>/admin-token, generated when there is no admin token at all)"},
	{Name: "SESSIONLEDGER_ADMIN_TOKENS", Usage: "the contents of an admin-tokens.json (named admin tokens), instead of <data-dir>/admin-tokens.json"},
	{Name: "SESSIONLEDGER_KEYS", Usage: "the contents of a keys.json, instead of <data-dir>/keys.json (to share keys between instances)"},
	{Name: "SESSIONLEDGER_INTROSPECTION_CLIENTS", Usage: "the contents of an introspection-clients.json, instead of <data-dir>/introspection-clients.json"},
}

// parseFlags parses args into fs, taking each flag's default from
// SESSIONLEDGER_<NAME> when that is set; -h or --help prints the command's
// flags with those names and the variables in env (flag.ErrHelp).
func parseFlags(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool), env ...cliflags.EnvVar) error {
	fs.Usage = cliflags.Usage(fs, "sessionledger "+fs.Name(), env...)
	return cliflags.Parse(fs, args, lookupEnv)
}

// defaultNATSURL is where tail, audit and bench look for the ledger's NATS:
// the embedded server's default listener.
const defaultNATSURL = "nats://127.0.0.1:4222"

// addNATSFlags registers --nats-url (with def and usage) and the credential
// flags every command shares.
func addNATSFlags(fs *flag.FlagSet, url *string, auth *eventstore.Auth, def, usage string) {
	fs.StringVar(url, "nats-url", def, usage)
	auth.AddFlags(fs)
}

// shutdownTimeout bounds a graceful shutdown.
const shutdownTimeout = 15 * time.Second
