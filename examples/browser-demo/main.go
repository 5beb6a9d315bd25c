// Command browser-demo is a small app that uses sessionledger from the
// browser: its backend "signs a user in" (a stand-in for your own login:
// any name, no password) by opening a session at the ledger, and hands the
// page the first refresh token; the page, with @sessionledger/client in
// cookie mode, exchanges it at once, shows the access token's claims, lists
// the user's devices, signs out other devices and signs out.
//
//	go run ./cmd/sessionledger serve --browser-origins http://localhost:3000   # the ledger, in one terminal
//	go run ./examples/browser-demo                                           # this app: open http://localhost:3000
//
// The admin token comes from SESSIONLEDGER_ADMIN_TOKEN or, by default,
// <--data-dir>/admin-token, read at each sign-in (so the demo may start
// before the ledger). It never reaches the page. An admin token can do
// everything the admin API does; a real backend keeps it as it keeps its
// other secrets.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	jsclient "github.com/sessionledger/sessionledger/clients/js"
	"github.com/sessionledger/sessionledger/internal/cliflags"
)

//go:embed index.html
var indexHTML string

//go:embed app.js
var appJS []byte

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], os.LookupEnv, log); err != nil && !errors.Is(err, flag.ErrHelp) {
		log.Error("browser-demo", "err", err)
		os.Exit(1)
	}
}

type demo struct {
	origin     string // where the page is, as the browser names it: the only origin /login serves
	ledgerURL  string
	adminToken func() (string, error)
	client     *http.Client
	log        *slog.Logger
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), log *slog.Logger) error {
	fs := flag.NewFlagSet("browser-demo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:3000", "HTTP listen address; open it as http://localhost:<port>, the origin the ledger lists")
	ledgerURL := fs.String("ledger-url", "http://localhost:8080", "the ledger's base URL (its issuer), as the browser reaches it")
	dataDir := fs.String("data-dir", "data", "the ledger's data directory, for its admin-token file")
	origin := fs.String("origin", "", "the page's origin as the browser names it (default http://localhost:<port of --listen>); the ledger's --browser-origins must list it")
	fs.Usage = cliflags.Usage(fs, "browser-demo", cliflags.EnvVar{Name: "SESSIONLEDGER_ADMIN_TOKEN", Usage: "the ledger's admin token (default: <data-dir>/admin-token)"})
	if err := cliflags.Parse(fs, args, lookupEnv); err != nil {
		return err
	}
	if u, err := url.Parse(*ledgerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(*ledgerURL, " ;'\"") {
		return fmt.Errorf("--ledger-url %q: want the ledger's http(s) base URL", *ledgerURL)
	}
	d := &demo{ledgerURL: strings.TrimRight(*ledgerURL, "/"), client: &http.Client{Timeout: 10 * time.Second}, log: log}
	d.adminToken = func() (string, error) {
		if v, ok := lookupEnv("SESSIONLEDGER_ADMIN_TOKEN"); ok && v != "" {
			return v, nil
		}
		b, err := os.ReadFile(filepath.Join(*dataDir, "admin-token"))
		if err != nil {
			return "", fmt.Errorf("no admin token: set SESSIONLEDGER_ADMIN_TOKEN or start the ledger (it writes %s)", filepath.Join(*dataDir, "admin-token"))
		}
		return strings.TrimSpace(string(b)), nil
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d.origin = strings.TrimRight(*origin, "/")
	if d.origin == "" {
		d.origin = "http://localhost:" + port
	}
	srv := &http.Server{Handler: d.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Fprintf(os.Stderr, "browser demo: open %s (the ledger at %s must list that origin: serve --browser-origins %s)\n", d.origin, d.ledgerURL, d.origin)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (d *demo) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.index)
	mux.HandleFunc("GET /client.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(jsclient.IndexJS)
	})
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(appJS)
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /login", d.login)
	return mux
}

func (d *demo) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' "+d.ledgerURL+"; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	page := strings.ReplaceAll(indexHTML, "{{LEDGER_URL}}", html.EscapeString(d.ledgerURL))
	_, _ = io.WriteString(w, page)
}

// login is the demo's stand-in for a real login: it opens a session at the
// ledger for the name given, and hands the page the first refresh token,
// which the page exchanges at once for the httpOnly cookie.
func (d *demo) login(w http.ResponseWriter, r *http.Request) {
	// Only the demo's own page may sign in, compared with the configured
	// origin, never with the request's Host (which DNS rebinding controls).
	if r.Header.Get("Origin") != d.origin || "http://"+r.Host != d.origin && "https://"+r.Host != d.origin {
		http.Error(w, "sign-in refused: not from "+d.origin, http.StatusForbidden)
		return
	}
	var body struct {
		User string `json:"user"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil || strings.TrimSpace(body.User) == "" {
		http.Error(w, `send {"user":"<a name>"}`, http.StatusBadRequest)
		return
	}
	admin, err := d.adminToken()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	req, _ := json.Marshal(map[string]any{
		"user_id": strings.TrimSpace(body.User), "client_id": "browser-demo",
		"claims": map[string]any{"demo": true},
		"device": map[string]string{"name": "browser demo", "user_agent": r.UserAgent(), "ip": host},
	})
	resp, err := d.post(r.Context(), "/v1/sessions", admin, req)
	if err != nil {
		d.log.Error("browser-demo: open a session", "err", err)
		http.Error(w, "the ledger is not reachable at "+d.ledgerURL+": start it with go run ./cmd/sessionledger serve --browser-origins http://"+r.Host, http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated {
		http.Error(w, fmt.Sprintf("the ledger refused the session: %d %s", resp.StatusCode, bytes.TrimSpace(out)), http.StatusBadGateway)
		return
	}
	var session struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(out, &session); err != nil {
		http.Error(w, "the ledger's answer was not understood", http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]string{"refresh_token": session.RefreshToken})
}

func (d *demo) post(ctx context.Context, path, admin string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.ledgerURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	return d.client.Do(req)
}
