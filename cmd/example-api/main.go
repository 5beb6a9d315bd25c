// Command example-api is a small service that trusts sessionledger's access
// tokens: it verifies them offline with the ledger's JWKS and refuses a
// revoked session's tokens as soon as the ledger records the revocation.
//
//	go run ./cmd/example-api --ledger-url http://localhost:8080 --nats-url nats://127.0.0.1:4222
//	curl -H "Authorization: Bearer $ACCESS_TOKEN" localhost:8081/me
//
// Against a NATS that wants credentials and TLS, give them as for
// `sessionledger tail` (read access is enough), the secrets in the environment:
//
//	SESSIONLEDGER_NATS_PASSWORD=… go run ./cmd/example-api --nats-url tls://nats.example.com:4222 \
//	  --nats-user auditor --nats-ca ca.pem [--nats-cert client.pem --nats-key client-key.pem]
//
// Like sessionledger's commands, every flag can also be set as
// SESSIONLEDGER_<NAME> (--nats-url as SESSIONLEDGER_NATS_URL); a flag wins.
// --help lists them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/cliflags"
	"github.com/sessionledger/sessionledger/verifier"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], os.LookupEnv, log); err != nil && !errors.Is(err, flag.ErrHelp) {
		log.Error("example-api", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), log *slog.Logger) error {
	fs := flag.NewFlagSet("example-api", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8081", "HTTP listen address")
	ledgerURL := fs.String("ledger-url", "http://localhost:8080", "the ledger's base URL (its JWKS is fetched from there)")
	issuer := fs.String("issuer", "", "expected iss (default: --ledger-url)")
	audience := fs.String("audience", "", "expected aud (default: the issuer)")
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "the ledger's NATS, for revocation events")
	var auth eventstore.Auth
	auth.AddFlags(fs) // read-only credentials are enough
	maxTTL := fs.Duration("max-token-ttl", time.Hour, "the longest access-token lifetime the ledger issues")
	failClosed := fs.Bool("fail-closed", false, "refuse every token while the revocation feed is down")
	fs.Usage = cliflags.Usage(fs, "example-api")
	if err := cliflags.Parse(fs, args, lookupEnv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("example-api takes no arguments, got %q", fs.Args())
	}
	base := strings.TrimRight(*ledgerURL, "/")
	if *issuer == "" {
		*issuer = base
	}
	if *audience == "" {
		*audience = *issuer
	}
	conn, err := eventstore.Connect(*natsURL, auth, "example-api")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	feed, err := conn.Feed(ctx)
	if err != nil {
		return err
	}
	v, err := verifier.New(ctx, verifier.Config{
		JWKSURL: base + "/.well-known/jwks.json", Issuer: *issuer, Audience: *audience,
		MaxTokenTTL: *maxTTL, FailClosed: *failClosed, Logger: log,
	}, feed)
	if err != nil {
		return err
	}
	defer v.Close()

	mux := http.NewServeMux()
	mux.Handle("GET /me", v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verifier.ClaimsFrom(r.Context())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"user_id": c.Subject, "session_id": c.SessionID, "claims": c.Custom})
	})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := v.Health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	log.Info("example-api listening", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
