package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/transport"
)

// benchConfig configures "sessionledger bench".
type benchConfig struct {
	url, adminToken, natsURL string
	clients, sessions        int
	duration                 time.Duration
	natsSync                 string
	asJSON                   bool
}

// benchResult is what one run measured.
type benchResult struct {
	Clients        int            `json:"clients"`
	Duration       string         `json:"duration"`
	Issued         int            `json:"issued"`
	IssuePerSec    float64        `json:"issue_per_sec"`
	Refreshes      int            `json:"refreshes"`
	RefreshPerSec  float64        `json:"refresh_per_sec"`
	P50, P90, P99  float64        `json:"-"`
	Max            float64        `json:"-"`
	LatencyMS      map[string]any `json:"latency_ms"`
	Errors         map[int]int    `json:"errors_by_status"`
	AppendPerSec   float64        `json:"bare_append_per_sec"`
	HandlerPerSec  float64        `json:"empty_handler_per_sec"`
	RatioToAppend  float64        `json:"refresh_to_append"`
	RatioToHandler float64        `json:"refresh_to_empty_handler"`
}

// bench drives a ledger over HTTP: clients concurrent clients, each owning
// sessions and chaining its refresh tokens, then the two reference points on
// the same machine and at the same concurrency.
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.url, "url", "", "the ledger to drive (default: start one in-process on a temporary data dir)")
	fs.StringVar(&cfg.adminToken, "admin-token", os.Getenv("SESSIONLEDGER_ADMIN_TOKEN"), "admin token of --url (default $SESSIONLEDGER_ADMIN_TOKEN)")
	fs.StringVar(&cfg.natsURL, "nats-url", "", "NATS of --url, for the bare-append reference (default: the in-process ledger's)")
	fs.IntVar(&cfg.clients, "clients", 64, "concurrent clients")
	fs.IntVar(&cfg.sessions, "sessions", 1, "sessions per client")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to refresh (and to run each reference)")
	fs.StringVar(&cfg.natsSync, "nats-sync", "", `in-process ledger only: JetStream sync interval ("always" to fsync every write)`)
	fs.BoolVar(&cfg.asJSON, "json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.clients < 1 || cfg.sessions < 1 || cfg.duration <= 0 {
		return errors.New("bench: --clients, --sessions and --duration must be positive")
	}
	if cfg.url == "" {
		stop, err := startBenchLedger(ctx, &cfg)
		if err != nil {
			return err
		}
		defer stop()
	} else if cfg.adminToken == "" || cfg.natsURL == "" {
		return errors.New("bench: with --url, give --admin-token (or SESSIONLEDGER_ADMIN_TOKEN) and --nats-url")
	}
	r, err := runBench(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if cfg.asJSON {
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	printBench(stdout, r)
	return nil
}

// startBenchLedger runs a ledger in-process on a temporary data dir.
func startBenchLedger(ctx context.Context, cfg *benchConfig) (func(), error) {
	dir, err := os.MkdirTemp("", "sessionledger-bench")
	if err != nil {
		return nil, err
	}
	c := DefaultConfig()
	c.HTTPAddr, c.NATSListen, c.DataDir, c.AdminToken = "127.0.0.1:0", "127.0.0.1:-1", dir, "bench-admin-token-0123456789abcdef"
	c.NATSSync = cfg.natsSync
	if err := c.complete(); err != nil {
		return nil, err
	}
	m := NewMain(c, slog.New(slog.DiscardHandler))
	if err := m.Run(ctx); err != nil {
		m.Close()
		return nil, err
	}
	for m.ready() != nil {
		time.Sleep(5 * time.Millisecond)
	}
	cfg.url, cfg.adminToken, cfg.natsURL = m.HTTPURL(), c.AdminToken, m.NATSURL()
	return func() { m.Close(); os.RemoveAll(dir) }, nil
}

func newBenchClient(clients int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: clients, MaxIdleConnsPerHost: clients, IdleConnTimeout: time.Minute,
	}}
}

func runBench(ctx context.Context, cfg benchConfig, log io.Writer) (benchResult, error) {
	r := benchResult{Clients: cfg.clients, Duration: cfg.duration.String(), Errors: map[int]int{}}
	client := newBenchClient(cfg.clients)
	base := strings.TrimRight(cfg.url, "/")

	// Issue: every client opens its sessions at once.
	fmt.Fprintf(log, "issuing %d sessions from %d clients\n", cfg.clients*cfg.sessions, cfg.clients)
	tokens := make([][]string, cfg.clients)
	var mu sync.Mutex
	start := time.Now()
	err := forClients(cfg.clients, func(c int) error {
		for s := 0; s < cfg.sessions; s++ {
			body := fmt.Sprintf(`{"user_id":"bench-%d-%d","device":{"name":"bench","user_agent":"sessionledger-bench"}}`, c, s)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/sessions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+cfg.adminToken)
			req.Header.Set("Content-Type", "application/json")
			status, out, err := do(client, req)
			if err != nil || status != http.StatusCreated {
				return fmt.Errorf("bench: issue: status %d: %v", status, err)
			}
			tokens[c] = append(tokens[c], out["refresh_token"].(string))
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	r.Issued = cfg.clients * cfg.sessions
	r.IssuePerSec = float64(r.Issued) / time.Since(start).Seconds()

	// Refresh: each client chains its own tokens for the duration.
	fmt.Fprintf(log, "refreshing for %v\n", cfg.duration)
	lat := make([][]time.Duration, cfg.clients)
	deadline := time.Now().Add(cfg.duration)
	start = time.Now()
	err = forClients(cfg.clients, func(c int) error {
		for n := 0; time.Now().Before(deadline); n++ {
			i := n % len(tokens[c])
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens[c][i]}}.Encode()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth2/token", strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			t0 := time.Now()
			status, out, err := do(client, req)
			if err != nil {
				return err
			}
			lat[c] = append(lat[c], time.Since(t0))
			if status != http.StatusOK {
				mu.Lock()
				r.Errors[status]++
				mu.Unlock()
				continue // the client keeps the token it has and tries again
			}
			tokens[c][i] = out["refresh_token"].(string)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r.Refreshes = len(all)
	for _, n := range r.Errors {
		r.Refreshes -= n
	}
	r.RefreshPerSec = float64(r.Refreshes) / elapsed.Seconds()
	ms := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(q*float64(len(all))))].Microseconds()) / 1000
	}
	r.P50, r.P90, r.P99, r.Max = ms(0.50), ms(0.90), ms(0.99), ms(1)
	r.LatencyMS = map[string]any{"p50": r.P50, "p90": r.P90, "p99": r.P99, "max": r.Max}

	// Reference 1: the bare JetStream append a refresh makes.
	fmt.Fprintf(log, "reference: bare JetStream appends for %v\n", cfg.duration)
	nc, err := nats.Connect(cfg.natsURL, nats.Name("sessionledger-bench"))
	if err != nil {
		return r, fmt.Errorf("bench: connect to %s: %w", cfg.natsURL, err)
	}
	defer nc.Close()
	if _, r.AppendPerSec, err = eventstore.ReferenceAppends(ctx, nc, cfg.clients, cfg.duration, 450); err != nil {
		return r, err
	}

	// Reference 2: the HTTP framework answering an empty JSON handler.
	fmt.Fprintf(log, "reference: empty echo handler for %v\n", cfg.duration)
	if r.HandlerPerSec, err = referenceHandlerRate(ctx, client, cfg.clients, cfg.duration); err != nil {
		return r, err
	}
	r.RatioToAppend = r.RefreshPerSec / r.AppendPerSec
	r.RatioToHandler = r.RefreshPerSec / r.HandlerPerSec
	return r, nil
}

// referenceHandlerRate serves transport.ReferenceHandler on loopback and
// drives it like the refresh phase did.
func referenceHandlerRate(ctx context.Context, client *http.Client, clients int, d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: transport.ReferenceHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	target := "http://" + ln.Addr().String() + "/oauth2/token"
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {strings.Repeat("x", 88)}}.Encode()
	counts := make([]int, clients)
	deadline := time.Now().Add(d)
	start := time.Now()
	err = forClients(clients, func(c int) error {
		for time.Now().Before(deadline) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if status, _, err := do(client, req); err != nil || status != http.StatusOK {
				return fmt.Errorf("bench: reference handler: %d %v", status, err)
			}
			counts[c]++
		}
		return nil
	})
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(total) / time.Since(start).Seconds(), err
}

// forClients runs fn for each client concurrently and returns the first error.
func forClients(clients int, fn func(c int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) { defer wg.Done(); errs[c] = fn(c) }(c)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// do sends req and decodes a JSON object body.
func do(client *http.Client, req *http.Request) (int, map[string]any, error) {
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, nil
}

func printBench(w io.Writer, r benchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "clients\t%d\n", r.Clients)
	fmt.Fprintf(tw, "issue\t%d sessions, %.0f/s\n", r.Issued, r.IssuePerSec)
	fmt.Fprintf(tw, "refresh\t%d in %s, %.0f/s\n", r.Refreshes, r.Duration, r.RefreshPerSec)
	fmt.Fprintf(tw, "latency\tp50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", r.P50, r.P90, r.P99, r.Max)
	var statuses []int
	for s := range r.Errors {
		statuses = append(statuses, s)
	}
	sort.Ints(statuses)
	errs := "none"
	if len(statuses) > 0 {
		var parts []string
		for _, s := range statuses {
			parts = append(parts, fmt.Sprintf("%d×%d", r.Errors[s], s))
		}
		errs = strings.Join(parts, ", ")
	}
	fmt.Fprintf(tw, "errors\t%s\n", errs)
	fmt.Fprintf(tw, "bare JetStream append\t%.0f/s (refresh = %.2f×)\n", r.AppendPerSec, r.RatioToAppend)
	fmt.Fprintf(tw, "empty echo handler\t%.0f/s (refresh = %.2f×)\n", r.HandlerPerSec, r.RatioToHandler)
	tw.Flush()
}
