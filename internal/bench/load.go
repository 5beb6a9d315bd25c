package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds what the attack and big-user scenarios share: issuing
// sessions, clients chaining their refresh tokens, forged requests closed-loop
// or paced, and a phase's figures with the server CPU it cost.

// Phase is what one phase measured.
type Phase struct {
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	// OK counts the answers the requests were meant to get: 200 for a
	// genuine refresh, 400 invalid_grant for a forged one.
	OK        int     `json:"ok"`
	OKPerSec  float64 `json:"ok_per_sec"`
	LatencyMS Latency `json:"latency_ms"`
	// Statuses counts every answer by HTTP status; 0 is no answer (a
	// transport error).
	Statuses    map[int]int    `json:"statuses"`
	OAuthErrors map[string]int `json:"oauth_errors,omitempty"`
	// Dropped counts genuine sessions a client gave up: refused with
	// anything but 503 (a 503 is retried with the same token).
	Dropped   int  `json:"sessions_dropped,omitempty"`
	ServerCPU *CPU `json:"server_cpu,omitempty"`
}

// Latency holds percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// CPU is the server CPU a phase cost.
type CPU struct {
	Seconds      float64 `json:"seconds"`
	Cores        float64 `json:"cores"` // CPU seconds per second of the phase
	PerRequestMS float64 `json:"per_request_ms"`
}

// tally is one client's record of a phase; a phase merges its clients'.
type tally struct {
	lat      []time.Duration
	ok       int
	statuses map[int]int
	oauth    map[string]int
	dropped  int
}

func newTallies(n int) []*tally {
	ts := make([]*tally, n)
	for i := range ts {
		ts[i] = &tally{statuses: map[int]int{}, oauth: map[string]int{}}
	}
	return ts
}

func (t *tally) add(status int, out map[string]any, d time.Duration, ok bool) {
	t.lat = append(t.lat, d)
	t.statuses[status]++
	if e, _ := out["error"].(string); e != "" {
		t.oauth[e]++
	}
	if ok {
		t.ok++
	}
}

// phase merges the clients' tallies of a phase that took elapsed.
func phase(ts []*tally, elapsed time.Duration) Phase {
	p := Phase{Seconds: elapsed.Seconds(), Statuses: map[int]int{}, OAuthErrors: map[string]int{}}
	lat := make([][]time.Duration, len(ts))
	for i, t := range ts {
		lat[i] = t.lat
		p.OK += t.ok
		p.Dropped += t.dropped
		for s, n := range t.statuses {
			p.Statuses[s] += n
		}
		for e, n := range t.oauth {
			p.OAuthErrors[e] += n
		}
	}
	all := merged(lat)
	p.Requests = len(all)
	if p.Seconds > 0 {
		p.OKPerSec = float64(p.OK) / p.Seconds
	}
	p.LatencyMS = Latency{P50: quantile(all, 0.50), P99: quantile(all, 0.99), Max: quantile(all, 1)}
	return p
}

// measure runs fn, and when t names a process, adds the server CPU between
// the phase's boundaries to the phase fn returns.
func measure(t Target, fn func() Phase) (Phase, error) {
	var p Phase
	cpu, err := measured(t, func() (float64, int) {
		p = fn()
		return p.Seconds, p.Requests
	})
	p.ServerCPU = cpu
	return p, err
}

// measured runs fn, which returns how long it ran and how many requests it
// sent, and returns the server CPU it cost (nil when t names no process).
func measured(t Target, fn func() (seconds float64, requests int)) (*CPU, error) {
	if t.PID == 0 {
		fn()
		return nil, nil
	}
	before, err := ProcessCPU(t.PID)
	if err != nil {
		return nil, err
	}
	seconds, requests := fn()
	after, err := ProcessCPU(t.PID)
	if err != nil {
		return nil, err
	}
	return cpuOf(after-before, seconds, requests), nil
}

func cpuOf(used time.Duration, seconds float64, requests int) *CPU {
	c := &CPU{Seconds: used.Seconds()}
	if seconds > 0 {
		c.Cores = used.Seconds() / seconds
	}
	if requests > 0 {
		c.PerRequestMS = used.Seconds() * 1000 / float64(requests)
	}
	return c
}

// idleCPU is the server's CPU per second while nothing is asked of it, over d.
func idleCPU(t Target, d time.Duration) (float64, error) {
	p, err := measure(t, func() Phase {
		time.Sleep(d)
		return Phase{Seconds: d.Seconds()}
	})
	if err != nil || p.ServerCPU == nil {
		return 0, err
	}
	return p.ServerCPU.Cores, nil
}

// Issue is what issuing a batch of sessions measured.
type Issue struct {
	Issued  int         `json:"issued"`
	Seconds float64     `json:"seconds"`
	PerSec  float64     `json:"per_sec"`
	Errors  map[int]int `json:"errors_by_status,omitempty"` // answers retried before a 201
	// ServerCPU is per session issued (retries included).
	ServerCPU *CPU `json:"server_cpu,omitempty"`
}

// issueRetries bounds the attempts to issue one session: 503 (and no answer)
// are retried, so a retry may leave an extra session behind.
const issueRetries = 20

// issueSessions issues n sessions, the i-th for userID(i), from clients
// concurrent clients, and returns their refresh tokens in order. Progress
// goes to log every few seconds.
func issueSessions(ctx context.Context, client *http.Client, t Target, clients, n int, userID func(i int) string, log io.Writer) ([]string, Issue, error) {
	tokens := make([]string, n)
	var next, done atomic.Int64
	var mu sync.Mutex
	is := Issue{Errors: map[int]int{}}
	issue := func(i int) error {
		body := fmt.Sprintf(`{"user_id":%q,"device":{"name":"bench","user_agent":"sessionledger-bench"}}`, userID(i))
		for attempt := 1; ; attempt++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.URL+"/v1/sessions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+t.AdminToken)
			req.Header.Set("Content-Type", "application/json")
			status, out, err := do(client, req)
			if status == http.StatusCreated {
				tokens[i], _ = out["refresh_token"].(string)
				done.Add(1)
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			mu.Lock()
			is.Errors[status]++
			mu.Unlock()
			if (status != http.StatusServiceUnavailable && err == nil) || attempt == issueRetries {
				return fmt.Errorf("bench: issue for %s: status %d: %v %v", userID(i), status, err, out)
			}
		}
	}
	stop := progress(log, "issued", n, &done)
	defer stop()
	start := time.Now()
	var issueErr error
	cpu, err := measured(t, func() (float64, int) {
		issueErr = forClients(min(clients, n), func(int) error {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := issue(i); err != nil {
					return err
				}
			}
			return nil
		})
		is.Issued, is.Seconds = int(done.Load()), time.Since(start).Seconds()
		return is.Seconds, is.Issued
	})
	is.ServerCPU = cpu
	if is.Seconds > 0 {
		is.PerSec = float64(is.Issued) / is.Seconds
	}
	return tokens, is, errors.Join(issueErr, err)
}

// progress prints "what k/n" to log every 5 s until stop is called.
func progress(log io.Writer, what string, n int, done *atomic.Int64) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				fmt.Fprintf(log, "  %s %d/%d\n", what, done.Load(), n)
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// postToken sends a refresh with token and times it.
func postToken(ctx context.Context, client *http.Client, base, token string) (int, map[string]any, time.Duration) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}.Encode()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth2/token", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	t0 := time.Now()
	status, out, _ := do(client, req) // an error is status 0
	return status, out, time.Since(t0)
}

// chain has client c refresh the sessions of tokens[c] round-robin until
// deadline, keeping the newest token of each, as a real client does (rotation
// makes every token single-use). A 503, or no answer, is retried at once with
// the same token: if the rotation did land, the retry is inside the reuse
// grace window and gets the same successor. A session refused otherwise is
// dropped. With every > 0, each client starts one refresh per every instead
// of one after another (paced, skipping a beat it is late for).
func chain(ctx context.Context, client *http.Client, base string, tokens [][]string, deadline time.Time, every time.Duration) Phase {
	ts := newTallies(len(tokens))
	start := time.Now()
	_ = forClients(len(tokens), func(c int) error {
		mine, t := tokens[c], ts[c]
		next := time.Now()
		for i := 0; len(mine) > 0 && ctx.Err() == nil; {
			if every > 0 {
				time.Sleep(time.Until(next))
				if next = next.Add(every); next.Before(time.Now()) {
					next = time.Now()
				}
			}
			if !time.Now().Before(deadline) {
				break
			}
			i %= len(mine)
			status, out, d := postToken(ctx, client, base, mine[i])
			t.add(status, out, d, status == http.StatusOK)
			switch status {
			case http.StatusOK:
				mine[i], _ = out["refresh_token"].(string)
				i++
			case http.StatusServiceUnavailable, 0:
			default:
				mine = append(mine[:i], mine[i+1:]...)
				t.dropped++
			}
		}
		tokens[c] = mine
		return nil
	})
	return phase(ts, time.Since(start))
}

// hammer has clients concurrent clients send forged refresh tokens made by
// forge until deadline, each as soon as the previous one is answered.
func hammer(ctx context.Context, client *http.Client, base string, clients int, deadline time.Time, forge func() string) Phase {
	ts := newTallies(clients)
	start := time.Now()
	_ = forClients(clients, func(c int) error {
		for time.Now().Before(deadline) && ctx.Err() == nil {
			status, out, d := postToken(ctx, client, base, forge())
			ts[c].add(status, out, d, refused(status, out))
		}
		return nil
	})
	return phase(ts, time.Since(start))
}

// Paced is what a paced stream of forged requests measured.
type Paced struct {
	Phase
	Rate float64 `json:"rate"` // requests per second asked for
	Sent int     `json:"sent"`
	// Missed counts the requests not sent because maxInFlight were already
	// waiting for an answer.
	Missed int `json:"missed"`
}

// maxInFlight bounds the forged requests a paced stream keeps waiting.
const maxInFlight = 256

// paced sends forged refresh tokens at rate per second until deadline (open
// loop: a request does not wait for the previous answer), the i-th made by
// forge(i).
func paced(ctx context.Context, client *http.Client, base string, rate float64, deadline time.Time, forge func(i int) string) Paced {
	var mu sync.Mutex
	t := newTallies(1)[0]
	var wg sync.WaitGroup
	var inFlight atomic.Int64
	p := Paced{Rate: rate}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	for i := 0; ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(deadline) {
			break
		}
		time.Sleep(time.Until(at))
		if inFlight.Load() >= maxInFlight {
			p.Missed++
			continue
		}
		p.Sent++
		inFlight.Add(1)
		wg.Add(1)
		go func(token string) {
			defer wg.Done()
			defer inFlight.Add(-1)
			status, out, d := postToken(ctx, client, base, token)
			mu.Lock()
			t.add(status, out, d, refused(status, out))
			mu.Unlock()
		}(forge(i))
	}
	wg.Wait()
	p.Phase = phase([]*tally{t}, time.Since(start))
	return p
}

// refused reports whether a forged token got the answer it should: 400
// invalid_grant.
func refused(status int, out map[string]any) bool {
	return status == http.StatusBadRequest && out["error"] == "invalid_grant"
}

// statusList formats counts by status as "5×200, 2×503" ("none" if empty).
func statusList(m map[int]int) string {
	var keys []int
	for s := range m {
		keys = append(keys, s)
	}
	sort.Ints(keys)
	var parts []string
	for _, s := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", m[s], s))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// cpuPerRequest formats a phase's server CPU per request.
func cpuPerRequest(p Phase) string {
	if p.ServerCPU == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f ms", p.ServerCPU.PerRequestMS)
}
