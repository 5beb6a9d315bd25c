package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
)

// AttackConfig configures RunAttack.
type AttackConfig struct {
	Target
	Users   int // preloaded users, one session each
	Clients int // genuine clients, each chaining one session of a preloaded user
	// ForgedClients is the concurrency of each forged-only phase: enough to
	// keep the server busy, few enough that a costly refusal is answered
	// within the request budget instead of timing out in a queue.
	ForgedClients int
	Duration      time.Duration // of each phase
	// Generation is how far one live session is refreshed before the
	// old-generation phase presents a generation-0 token of it.
	Generation int
	ForgedRate float64 // forged requests per second while genuine clients refresh
}

// Forged refresh-token kinds, in the order the attack scenario sends them.
const (
	ForgedUnknown       = "unknown"        // well-formed, for a session never issued
	ForgedOldGeneration = "old-generation" // generation 0, random secret, of a session at a high generation
	ForgedGarbage       = "garbage"        // random printable characters, a token's length
	ForgedGarbage4K     = "garbage-4k"     // random printable characters, 4 KiB
)

// ForgedKinds lists the kinds in order.
var ForgedKinds = []string{ForgedUnknown, ForgedOldGeneration, ForgedGarbage, ForgedGarbage4K}

// AttackResult is what RunAttack measured.
type AttackResult struct {
	Users         int     `json:"users"`
	Clients       int     `json:"clients"`
	ForgedClients int     `json:"forged_clients"`
	Duration      string  `json:"phase_duration"`
	Generation    int     `json:"old_generation_session_at"`
	ForgedRate    float64 `json:"forged_rate"`
	CPUSource     string  `json:"cpu_source,omitempty"`
	Preload       Issue   `json:"preload"`
	// ChainSeconds is how long the sequential refreshes that took one
	// session to Generation took.
	ChainSeconds float64 `json:"old_generation_chain_seconds"`
	IdleCores    float64 `json:"server_idle_cores,omitempty"`
	// Genuine is the reference: clients chaining their refresh tokens,
	// undisturbed.
	Genuine Phase `json:"genuine"`
	// Forged holds each kind sent alone, closed loop from ForgedClients
	// clients.
	Forged map[string]Phase `json:"forged"`
	// CPURatio is, per kind, server CPU per refusal ÷ server CPU per genuine
	// refresh.
	CPURatio    map[string]float64 `json:"cpu_refusal_to_refresh,omitempty"`
	UnderAttack UnderAttack        `json:"under_attack"`
	// RateRatio is the genuine refresh rate under attack ÷ undisturbed;
	// P99Ratio the same for the p99 latency.
	RateRatio float64 `json:"genuine_under_attack_to_undisturbed"`
	P99Ratio  float64 `json:"p99_under_attack_to_undisturbed"`
}

// UnderAttack is genuine clients refreshing while forged requests of every
// kind, in turn, arrive at a fixed rate.
type UnderAttack struct {
	Genuine   Phase `json:"genuine"`
	Forged    Paced `json:"forged"`
	ServerCPU *CPU  `json:"server_cpu,omitempty"` // both together, per request of either
}

// RunAttack preloads cfg.Users users with a session each, then measures,
// each for cfg.Duration: genuine refreshes alone; each kind of forged refresh
// token alone; genuine refreshes while forged ones arrive at cfg.ForgedRate.
// Progress goes to log.
func RunAttack(ctx context.Context, cfg AttackConfig, log io.Writer) (AttackResult, error) {
	r := AttackResult{Users: cfg.Users, Clients: cfg.Clients, ForgedClients: cfg.ForgedClients, Duration: cfg.Duration.String(),
		Generation: cfg.Generation, ForgedRate: cfg.ForgedRate, Forged: map[string]Phase{}, CPURatio: map[string]float64{}}
	if cfg.Users < cfg.Clients || cfg.Clients < 1 || cfg.ForgedClients < 1 || cfg.Generation < 0 || cfg.ForgedRate <= 0 || cfg.Duration <= 0 {
		return r, errors.New("bench: attack needs at least as many users as clients, a client, a forged client, a generation ≥ 0, a forged rate and a duration")
	}
	if cfg.PID != 0 {
		r.CPUSource = CPUSource
	}
	client := newBenchClient(max(cfg.Clients+maxInFlight, cfg.ForgedClients))
	base := strings.TrimRight(cfg.URL, "/")
	cfg.URL = base

	fmt.Fprintf(log, "preloading %d users with a session each\n", cfg.Users)
	tokens, preload, err := issueSessions(ctx, client, cfg.Target, cfg.Clients, cfg.Users, func(i int) string { return fmt.Sprintf("attack-%d", i) }, log)
	r.Preload = preload
	if err != nil {
		return r, err
	}

	fmt.Fprintf(log, "refreshing one session to generation %d\n", cfg.Generation)
	live, _, err := issueSessions(ctx, client, cfg.Target, 1, 1, func(int) string { return "attack-old-generation" }, io.Discard)
	if err != nil {
		return r, err
	}
	start := time.Now()
	token := live[0]
	var done atomic.Int64
	stop := progress(log, "refreshed", cfg.Generation, &done)
	for g := 0; g < cfg.Generation; g++ {
		status, out, _ := postToken(ctx, client, base, token)
		if status != http.StatusOK {
			stop()
			return r, fmt.Errorf("bench: refresh to generation %d: status %d %v", g+1, status, out)
		}
		token, _ = out["refresh_token"].(string)
		done.Add(1)
	}
	stop()
	r.ChainSeconds = time.Since(start).Seconds()
	f, err := newForger(tokens[0], token)
	if err != nil {
		return r, err
	}

	if r.IdleCores, err = idleCPU(cfg.Target, min(2*time.Second, cfg.Duration)); err != nil {
		return r, err
	}
	genuine := make([][]string, cfg.Clients)
	for c := range genuine {
		genuine[c] = []string{tokens[c]}
	}
	fmt.Fprintf(log, "genuine refreshes from %d clients for %v\n", cfg.Clients, cfg.Duration)
	if r.Genuine, err = measure(cfg.Target, func() Phase {
		return chain(ctx, client, base, genuine, time.Now().Add(cfg.Duration), 0)
	}); err != nil {
		return r, err
	}
	for _, kind := range ForgedKinds {
		fmt.Fprintf(log, "forged %s tokens from %d clients for %v\n", kind, cfg.ForgedClients, cfg.Duration)
		p, err := measure(cfg.Target, func() Phase {
			return hammer(ctx, client, base, cfg.ForgedClients, time.Now().Add(cfg.Duration), func() string { return f.forge(kind) })
		})
		if err != nil {
			return r, err
		}
		r.Forged[kind] = p
		if p.ServerCPU != nil && r.Genuine.ServerCPU != nil && r.Genuine.ServerCPU.PerRequestMS > 0 {
			r.CPURatio[kind] = p.ServerCPU.PerRequestMS / r.Genuine.ServerCPU.PerRequestMS
		}
	}

	fmt.Fprintf(log, "genuine refreshes while %.0f forged requests/s arrive, for %v\n", cfg.ForgedRate, cfg.Duration)
	ua := &r.UnderAttack
	ua.ServerCPU, err = measured(cfg.Target, func() (float64, int) {
		deadline := time.Now().Add(cfg.Duration)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			ua.Forged = paced(ctx, client, base, cfg.ForgedRate, deadline, func(i int) string { return f.forge(ForgedKinds[i%len(ForgedKinds)]) })
		}()
		ua.Genuine = chain(ctx, client, base, genuine, deadline, 0)
		wg.Wait()
		return max(ua.Genuine.Seconds, ua.Forged.Seconds), ua.Genuine.Requests + ua.Forged.Requests
	})
	if err != nil {
		return r, err
	}
	if r.Genuine.OKPerSec > 0 {
		r.RateRatio = ua.Genuine.OKPerSec / r.Genuine.OKPerSec
	}
	if r.Genuine.LatencyMS.P99 > 0 {
		r.P99Ratio = ua.Genuine.LatencyMS.P99 / r.Genuine.LatencyMS.P99
	}
	return r, nil
}

// forger makes forged refresh tokens. Every call makes a new one.
type forger struct {
	template domain.RefreshToken // a genuine token, parsed
	live     string              // the session at a high generation
	length   int                 // of an encoded token
}

// newForger takes a genuine token as the template and the current token of
// the session at a high generation.
func newForger(genuine, live string) (*forger, error) {
	t, err := domain.ParseRefreshToken(genuine)
	if err != nil {
		return nil, fmt.Errorf("bench: a genuine refresh token does not parse: %w", err)
	}
	l, err := domain.ParseRefreshToken(live)
	if err != nil {
		return nil, fmt.Errorf("bench: a genuine refresh token does not parse: %w", err)
	}
	return &forger{template: t, live: l.SessionID, length: len(genuine)}, nil
}

func (f *forger) forge(kind string) string {
	switch kind {
	case ForgedUnknown:
		t := f.template
		t.SessionID = ulid.Make().String()
		randomSecret(&t)
		return t.Encode()
	case ForgedOldGeneration:
		t := domain.RefreshToken{SessionID: f.live}
		randomSecret(&t)
		return t.Encode()
	case ForgedGarbage:
		return printable(f.length)
	case ForgedGarbage4K:
		return printable(4096)
	}
	panic("bench: no forged kind " + kind)
}

func randomSecret(t *domain.RefreshToken) {
	for i := range t.Secret {
		t.Secret[i] = byte(rand.Uint32())
	}
}

// printable returns n random printable ASCII characters.
func printable(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('!' + rand.IntN('~'-'!'+1))
	}
	return string(b)
}

// PrintAttack writes r as a table.
func PrintAttack(w io.Writer, r AttackResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "users\t%d preloaded, one session each: %s\n", r.Preload.Issued, issueLine(r.Preload))
	fmt.Fprintf(tw, "old-generation session\trefreshed to generation %d in %.1f s, one after another\n", r.Generation, r.ChainSeconds)
	if r.CPUSource != "" {
		fmt.Fprintf(tw, "server CPU\t%s; idle %.3f cores\n", r.CPUSource, r.IdleCores)
	}
	fmt.Fprintf(tw, "phases\t%s each; %d genuine clients, %d forging alone\n", r.Duration, r.Clients, r.ForgedClients)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\trequests\tanswered as meant/s\tp50\tp99\tstatuses\tserver CPU/request\t÷ refresh")
	row := func(name string, p Phase, ratio string) {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f ms\t%.2f ms\t%s\t%s\t%s\n", name, p.Requests, p.OKPerSec, p.LatencyMS.P50, p.LatencyMS.P99, statusList(p.Statuses), cpuPerRequest(p), ratio)
	}
	row("genuine refresh", r.Genuine, "1")
	for _, kind := range ForgedKinds {
		ratio := "-"
		if v, ok := r.CPURatio[kind]; ok {
			ratio = fmt.Sprintf("%.2f", v)
		}
		row("forged "+kind, r.Forged[kind], ratio)
	}
	ua := r.UnderAttack
	row("under attack: genuine", ua.Genuine, "")
	row("under attack: forged", ua.Forged.Phase, "")
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "forged while refreshing\t%d sent at %.0f/s, mixed kinds in turn; %d not sent (%d already waiting)\n", ua.Forged.Sent, ua.Forged.Rate, ua.Forged.Missed, maxInFlight)
	if ua.ServerCPU != nil {
		fmt.Fprintf(tw, "server under attack\t%.2f cores\n", ua.ServerCPU.Cores)
	}
	fmt.Fprintf(tw, "genuine under attack ÷ undisturbed\trate %.2f, p99 %.2f×\n", r.RateRatio, r.P99Ratio)
	if dropped := r.Genuine.Dropped + ua.Genuine.Dropped; dropped > 0 {
		fmt.Fprintf(tw, "genuine sessions dropped\t%d (refused with other than 503)\n", dropped)
	}
	tw.Flush()
}

// issueLine formats the rate, server CPU and retries of an issue batch.
func issueLine(is Issue) string {
	line := fmt.Sprintf("%.0f/s (%.1f s)", is.PerSec, is.Seconds)
	if is.ServerCPU != nil {
		line += fmt.Sprintf(", server CPU %.3f ms per session", is.ServerCPU.PerRequestMS)
	}
	if len(is.Errors) > 0 {
		line += ", retried after " + statusList(is.Errors)
	}
	return line
}
