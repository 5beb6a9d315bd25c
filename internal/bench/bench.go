// Package bench drives a ledger over HTTP the way "sessionledger bench" does,
// and holds the two references a refresh rate is compared with on the same
// machine: a bare JetStream append (appends.go) and the HTTP framework
// answering an empty handler (handler.go). These fixtures import nats and
// echo directly to measure them without the ledger; nothing in the service
// imports this package.
package bench

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sessionledger/sessionledger/eventstore"
)

// Config says what to drive and how hard.
type Config struct {
	URL, AdminToken string // the ledger and its admin token
	// The ledger's NATS, for the bare-append reference, with the ledger's
	// credentials (the reference writes a stream of its own there); Dial, if
	// set, connects instead (the in-process ledger's embedded server).
	NATSURL           string
	NATSAuth          eventstore.Auth
	Dial              func() (*eventstore.Conn, error)
	Clients, Sessions int // concurrent clients, sessions per client
	Duration          time.Duration
}

// Result is what one run measured.
type Result struct {
	Clients       int            `json:"clients"`
	SigningAlg    string         `json:"signing_alg"` // the alg in the header of the access tokens issued
	Duration      string         `json:"duration"`
	Issued        int            `json:"issued"`
	IssuePerSec   float64        `json:"issue_per_sec"`
	Refreshes     int            `json:"refreshes"`
	RefreshPerSec float64        `json:"refresh_per_sec"`
	P50, P90, P99 float64        `json:"-"`
	Max           float64        `json:"-"`
	LatencyMS     map[string]any `json:"latency_ms"`
	Errors        map[int]int    `json:"errors_by_status"`
	// Introspection of each client's newest access token, which a
	// concurrent write could end: the answer waits for the user's last event.
	Introspections      int            `json:"introspections"`
	IntrospectPerSec    float64        `json:"introspect_per_sec"`
	IntrospectLatencyMS map[string]any `json:"introspect_latency_ms"`
	IntrospectP50       float64        `json:"-"`
	IntrospectP99       float64        `json:"-"`
	AppendPerSec        float64        `json:"bare_append_per_sec"`
	HandlerPerSec       float64        `json:"empty_handler_per_sec"`
	RatioToAppend       float64        `json:"refresh_to_append"`
	RatioToHandler      float64        `json:"refresh_to_empty_handler"`
}

func newBenchClient(clients int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: clients, MaxIdleConnsPerHost: clients, IdleConnTimeout: time.Minute,
	}}
}

// Run issues cfg.Sessions sessions from each of cfg.Clients clients, has each
// client chain its refresh tokens for cfg.Duration, then measures the two
// references at the same concurrency. Progress goes to log.
func Run(ctx context.Context, cfg Config, log io.Writer) (Result, error) {
	r := Result{Clients: cfg.Clients, Duration: cfg.Duration.String(), Errors: map[int]int{}}
	client := newBenchClient(cfg.Clients)
	base := strings.TrimRight(cfg.URL, "/")

	// Issue: every client opens its sessions at once.
	fmt.Fprintf(log, "issuing %d sessions from %d clients\n", cfg.Clients*cfg.Sessions, cfg.Clients)
	tokens := make([][]string, cfg.Clients)
	access := make([]string, cfg.Clients) // each client's newest access token
	var mu sync.Mutex
	start := time.Now()
	err := forClients(cfg.Clients, func(c int) error {
		for s := 0; s < cfg.Sessions; s++ {
			body := fmt.Sprintf(`{"user_id":"bench-%d-%d","device":{"name":"bench","user_agent":"sessionledger-bench"}}`, c, s)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/sessions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+cfg.AdminToken)
			req.Header.Set("Content-Type", "application/json")
			status, out, err := do(client, req)
			if err != nil || status != http.StatusCreated {
				return fmt.Errorf("bench: issue: status %d: %v", status, err)
			}
			tokens[c] = append(tokens[c], out["refresh_token"].(string))
			access[c] = out["access_token"].(string)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	r.Issued = cfg.Clients * cfg.Sessions
	r.IssuePerSec = float64(r.Issued) / time.Since(start).Seconds()

	// Refresh: each client chains its own tokens for the duration.
	fmt.Fprintf(log, "refreshing for %v\n", cfg.Duration)
	lat := make([][]time.Duration, cfg.Clients)
	deadline := time.Now().Add(cfg.Duration)
	start = time.Now()
	err = forClients(cfg.Clients, func(c int) error {
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
			access[c] = out["access_token"].(string)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	elapsed := time.Since(start)
	r.SigningAlg = tokenAlg(access[0])
	all := merged(lat)
	r.Refreshes = len(all)
	for _, n := range r.Errors {
		r.Refreshes -= n
	}
	r.RefreshPerSec = float64(r.Refreshes) / elapsed.Seconds()
	r.P50, r.P90, r.P99, r.Max = quantile(all, 0.50), quantile(all, 0.90), quantile(all, 0.99), quantile(all, 1)
	r.LatencyMS = map[string]any{"p50": r.P50, "p90": r.P90, "p99": r.P99, "max": r.Max}

	// Introspection: each client asks about its newest access token, as a
	// resource server would on every call it serves.
	fmt.Fprintf(log, "introspecting for %v\n", cfg.Duration)
	lat = make([][]time.Duration, cfg.Clients)
	deadline = time.Now().Add(cfg.Duration)
	start = time.Now()
	err = forClients(cfg.Clients, func(c int) error {
		form := url.Values{"token": {access[c]}}.Encode()
		for time.Now().Before(deadline) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth2/introspect", strings.NewReader(form))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+cfg.AdminToken)
			t0 := time.Now()
			status, out, err := do(client, req)
			if err != nil {
				return err
			}
			if status != http.StatusOK || out["active"] != true {
				return fmt.Errorf("bench: introspect: status %d, %v", status, out)
			}
			lat[c] = append(lat[c], time.Since(t0))
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	all = merged(lat)
	r.Introspections = len(all)
	r.IntrospectPerSec = float64(len(all)) / time.Since(start).Seconds()
	r.IntrospectP50, r.IntrospectP99 = quantile(all, 0.50), quantile(all, 0.99)
	r.IntrospectLatencyMS = map[string]any{"p50": r.IntrospectP50, "p99": r.IntrospectP99, "max": quantile(all, 1)}

	// Reference 1: the bare JetStream append a refresh makes.
	fmt.Fprintf(log, "reference: bare JetStream appends for %v\n", cfg.Duration)
	dial := cfg.Dial
	if dial == nil {
		dial = func() (*eventstore.Conn, error) {
			return eventstore.Connect(cfg.NATSURL, cfg.NATSAuth, "sessionledger-bench")
		}
	}
	conn, err := dial()
	if err != nil {
		return r, err
	}
	defer conn.Close(context.Background())
	if _, r.AppendPerSec, err = ReferenceAppends(ctx, conn, cfg.Clients, cfg.Duration, 450); err != nil {
		return r, err
	}

	// Reference 2: the HTTP framework answering an empty JSON handler.
	fmt.Fprintf(log, "reference: empty echo handler for %v\n", cfg.Duration)
	if r.HandlerPerSec, err = referenceHandlerRate(ctx, client, cfg.Clients, cfg.Duration); err != nil {
		return r, err
	}
	r.RatioToAppend = r.RefreshPerSec / r.AppendPerSec
	r.RatioToHandler = r.RefreshPerSec / r.HandlerPerSec
	return r, nil
}

// tokenAlg returns the alg of the JWS header of token; "" if it has none.
func tokenAlg(token string) string {
	header, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return ""
	}
	var h struct {
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(b, &h)
	return h.Alg
}

// merged returns every client's latencies in one sorted slice.
func merged(lat [][]time.Duration) []time.Duration {
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return all
}

// quantile returns the q-quantile of sorted latencies in milliseconds.
func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(len(sorted)-1, int(q*float64(len(sorted))))].Microseconds()) / 1000
}

// referenceHandlerRate serves ReferenceHandler on loopback and
// drives it like the refresh phase did.
func referenceHandlerRate(ctx context.Context, client *http.Client, clients int, d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: ReferenceHandler(), ReadHeaderTimeout: 5 * time.Second}
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

// Print writes r as a table.
func Print(w io.Writer, r Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "clients\t%d\n", r.Clients)
	fmt.Fprintf(tw, "access tokens\t%s\n", r.SigningAlg)
	fmt.Fprintf(tw, "issue\t%d sessions, %.0f/s\n", r.Issued, r.IssuePerSec)
	fmt.Fprintf(tw, "refresh\t%d in %s, %.0f/s\n", r.Refreshes, r.Duration, r.RefreshPerSec)
	fmt.Fprintf(tw, "latency\tp50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", r.P50, r.P90, r.P99, r.Max)
	fmt.Fprintf(tw, "errors\t%s\n", statusList(r.Errors))
	fmt.Fprintf(tw, "introspect\t%d in %s, %.0f/s, p50 %.2f ms, p99 %.2f ms\n", r.Introspections, r.Duration, r.IntrospectPerSec, r.IntrospectP50, r.IntrospectP99)
	fmt.Fprintf(tw, "bare JetStream append\t%.0f/s (refresh = %.2f×)\n", r.AppendPerSec, r.RatioToAppend)
	fmt.Fprintf(tw, "empty echo handler\t%.0f/s (refresh = %.2f×)\n", r.HandlerPerSec, r.RatioToHandler)
	tw.Flush()
}
