package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// BigUserConfig configures RunBigUser.
type BigUserConfig struct {
	Target
	// Sessions is how many sessions the one big user has, and how many
	// users with one session each it is compared with.
	Sessions int
	Clients  int // concurrent clients refreshing them
	// OtherClients are other users, one session each, refreshing at
	// OtherRate per second together while the big user (or the many) do.
	OtherClients int
	OtherRate    float64
	Duration     time.Duration // of each phase
}

// BigUserResult is what RunBigUser measured.
type BigUserResult struct {
	Sessions     int     `json:"sessions"`
	Clients      int     `json:"clients"`
	OtherClients int     `json:"other_clients"`
	OtherRate    float64 `json:"other_rate"`
	Duration     string  `json:"phase_duration"`
	CPUSource    string  `json:"cpu_source,omitempty"`
	// IssueManyUsers is issuing Sessions sessions for as many users;
	// IssueOneUser for one user.
	IssueManyUsers Issue `json:"issue_many_users"`
	IssueOneUser   Issue `json:"issue_one_user"`
	// OthersAlone is the other users refreshing with nothing else going on.
	OthersAlone Phase `json:"others_alone"`
	// The two contention phases run twice, in the order many, one, one,
	// many, so that what grows as the run goes on (the stream, the heap)
	// weighs on both alike; the ratios compare the sums.
	ManyUsers      Contention `json:"many_users"`
	OneUser        Contention `json:"one_user"`
	OneUserAgain   Contention `json:"one_user_again"`
	ManyUsersAgain Contention `json:"many_users_again"`
	// RateRatio is the one user's refresh rate ÷ the many users'.
	RateRatio float64 `json:"one_user_to_many_users"`
	// OthersP99Ratio is the other users' p99 while the one user refreshes ÷
	// while the many do; OthersP99ToAlone ÷ with nothing else going on.
	OthersP99Ratio   float64 `json:"others_p99_one_user_to_many_users"`
	OthersP99ToAlone float64 `json:"others_p99_one_user_to_alone"`
	List             Listing `json:"list_sessions"`
}

// Contention is Clients clients chaining their sessions' refresh tokens
// while the other users refresh theirs.
type Contention struct {
	Refresh   Phase `json:"refresh"`
	Others    Phase `json:"others"`
	ServerCPU *CPU  `json:"server_cpu,omitempty"` // both together, per request of either
}

// Listing is GET /v1/users/{user_id}/sessions of the big user, every page.
type Listing struct {
	Status   int     `json:"status"`
	Pages    int     `json:"pages"`
	Sessions int     `json:"sessions"`
	Bytes    int     `json:"bytes"`
	MS       float64 `json:"ms"`
}

// bigUser is the user id of the one user with many sessions.
const bigUser = "big-user"

// RunBigUser compares one user with cfg.Sessions sessions with as many users
// with one session each: issuing them, refreshing them from cfg.Clients
// clients, the p99 other users see meanwhile, and listing the big user's
// sessions. Progress goes to log.
func RunBigUser(ctx context.Context, cfg BigUserConfig, log io.Writer) (BigUserResult, error) {
	r := BigUserResult{Sessions: cfg.Sessions, Clients: cfg.Clients, OtherClients: cfg.OtherClients, OtherRate: cfg.OtherRate, Duration: cfg.Duration.String()}
	if cfg.Sessions < cfg.Clients || cfg.Clients < 1 || cfg.OtherClients < 1 || cfg.OtherRate <= 0 || cfg.Duration <= 0 {
		return r, errors.New("bench: big-user needs at least as many sessions as clients, a client, an other client, an other rate and a duration")
	}
	if cfg.PID != 0 {
		r.CPUSource = CPUSource
	}
	client := newBenchClient(cfg.Clients + cfg.OtherClients)
	cfg.URL = strings.TrimRight(cfg.URL, "/")

	fmt.Fprintf(log, "issuing %d sessions for %d other users\n", cfg.OtherClients, cfg.OtherClients)
	otherTokens, _, err := issueSessions(ctx, client, cfg.Target, cfg.OtherClients, cfg.OtherClients, func(i int) string { return fmt.Sprintf("other-%d", i) }, io.Discard)
	if err != nil {
		return r, err
	}
	others := split(otherTokens, cfg.OtherClients)
	fmt.Fprintf(log, "issuing %d sessions for %d users\n", cfg.Sessions, cfg.Sessions)
	manyTokens, is, err := issueSessions(ctx, client, cfg.Target, cfg.Clients, cfg.Sessions, func(i int) string { return fmt.Sprintf("many-%d", i) }, log)
	r.IssueManyUsers = is
	if err != nil {
		return r, err
	}
	fmt.Fprintf(log, "issuing %d sessions for one user\n", cfg.Sessions)
	oneTokens, is, err := issueSessions(ctx, client, cfg.Target, cfg.Clients, cfg.Sessions, func(int) string { return bigUser }, log)
	r.IssueOneUser = is
	if err != nil {
		return r, err
	}

	every := time.Duration(float64(cfg.OtherClients) / cfg.OtherRate * float64(time.Second))
	fmt.Fprintf(log, "other users alone, %.0f refreshes/s, for %v\n", cfg.OtherRate, cfg.Duration)
	if r.OthersAlone, err = measure(cfg.Target, func() Phase {
		return chain(ctx, client, cfg.URL, others, time.Now().Add(cfg.Duration), every)
	}); err != nil {
		return r, err
	}
	// Split once: chain keeps each client's current tokens in its slice, so
	// a second phase goes on from where the first left them.
	many, one := split(manyTokens, cfg.Clients), split(oneTokens, cfg.Clients)
	contend := func(tokens [][]string) (Contention, error) {
		var c Contention
		var err error
		c.ServerCPU, err = measured(cfg.Target, func() (float64, int) {
			deadline := time.Now().Add(cfg.Duration)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); c.Others = chain(ctx, client, cfg.URL, others, deadline, every) }()
			c.Refresh = chain(ctx, client, cfg.URL, tokens, deadline, 0)
			wg.Wait()
			return max(c.Refresh.Seconds, c.Others.Seconds), c.Refresh.Requests + c.Others.Requests
		})
		return c, err
	}
	fmt.Fprintf(log, "%d users, one session each, refreshing from %d clients for %v\n", cfg.Sessions, cfg.Clients, cfg.Duration)
	if r.ManyUsers, err = contend(many); err != nil {
		return r, err
	}
	fmt.Fprintf(log, "one user's %d sessions refreshing from %d clients for %v\n", cfg.Sessions, cfg.Clients, cfg.Duration)
	if r.OneUser, err = contend(one); err != nil {
		return r, err
	}
	fmt.Fprintf(log, "again, in the other order\n")
	if r.OneUserAgain, err = contend(one); err != nil {
		return r, err
	}
	if r.ManyUsersAgain, err = contend(many); err != nil {
		return r, err
	}
	if v := r.ManyUsers.Refresh.OKPerSec + r.ManyUsersAgain.Refresh.OKPerSec; v > 0 {
		r.RateRatio = (r.OneUser.Refresh.OKPerSec + r.OneUserAgain.Refresh.OKPerSec) / v
	}
	if v := r.ManyUsers.Others.LatencyMS.P99 + r.ManyUsersAgain.Others.LatencyMS.P99; v > 0 {
		r.OthersP99Ratio = (r.OneUser.Others.LatencyMS.P99 + r.OneUserAgain.Others.LatencyMS.P99) / v
	}
	if v := r.OthersAlone.LatencyMS.P99; v > 0 {
		r.OthersP99ToAlone = (r.OneUser.Others.LatencyMS.P99 + r.OneUserAgain.Others.LatencyMS.P99) / 2 / v
	}

	fmt.Fprintf(log, "listing the big user's sessions\n")
	r.List, err = listSessions(ctx, client, cfg.Target, bigUser)
	return r, err
}

// split deals tokens to clients round-robin: client c owns tokens c, c+n, ….
func split(tokens []string, clients int) [][]string {
	out := make([][]string, clients)
	for i, t := range tokens {
		out[i%clients] = append(out[i%clients], t)
	}
	return out
}

// maxPages bounds the pages listSessions follows.
const maxPages = 100_000

// listSessions lists a user's sessions, following "next_cursor" (as
// ?cursor=) while an answer has one, and measures the whole.
func listSessions(ctx context.Context, client *http.Client, t Target, user string) (Listing, error) {
	var l Listing
	start := time.Now()
	cursor := ""
	for l.Pages < maxPages {
		u := t.URL + "/v1/users/" + url.PathEscape(user) + "/sessions"
		if cursor != "" {
			u += "?cursor=" + url.QueryEscape(cursor)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+t.AdminToken)
		resp, err := client.Do(req)
		if err != nil {
			return l, fmt.Errorf("bench: list sessions: %w", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return l, fmt.Errorf("bench: list sessions: %w", err)
		}
		l.Status, l.Bytes, l.Pages = resp.StatusCode, l.Bytes+len(body), l.Pages+1
		var page struct {
			Sessions   []json.RawMessage `json:"sessions"`
			NextCursor string            `json:"next_cursor"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &page) != nil {
			return l, fmt.Errorf("bench: list sessions: status %d: %.200s", resp.StatusCode, body)
		}
		l.Sessions += len(page.Sessions)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	l.MS = float64(time.Since(start).Microseconds()) / 1000
	return l, nil
}

// PrintBigUser writes r as a table.
func PrintBigUser(w io.Writer, r BigUserResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "issue %d users, one session each\t%s\n", r.IssueManyUsers.Issued, issueLine(r.IssueManyUsers))
	fmt.Fprintf(tw, "issue %d sessions for one user\t%s\n", r.IssueOneUser.Issued, issueLine(r.IssueOneUser))
	if r.CPUSource != "" {
		fmt.Fprintf(tw, "server CPU\t%s\n", r.CPUSource)
	}
	fmt.Fprintf(tw, "phases\t%s each, %d clients; other users: %d clients, %.0f refreshes/s together\n", r.Duration, r.Clients, r.OtherClients, r.OtherRate)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\trequests\trefresh/s\tp50\tp99\tstatuses\tdropped\tserver CPU/request\tserver cores")
	row := func(name string, p Phase, cpu *CPU) {
		per, cores := "-", "-"
		if cpu != nil {
			per, cores = fmt.Sprintf("%.3f ms", cpu.PerRequestMS), fmt.Sprintf("%.2f", cpu.Cores)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f ms\t%.2f ms\t%s\t%d\t%s\t%s\n", name, p.Requests, p.OKPerSec, p.LatencyMS.P50, p.LatencyMS.P99, statusList(p.Statuses), p.Dropped, per, cores)
	}
	row("other users alone", r.OthersAlone, r.OthersAlone.ServerCPU)
	row(fmt.Sprintf("%d users × 1 session", r.Sessions), r.ManyUsers.Refresh, r.ManyUsers.ServerCPU)
	row("  other users meanwhile", r.ManyUsers.Others, nil)
	row(fmt.Sprintf("1 user × %d sessions", r.Sessions), r.OneUser.Refresh, r.OneUser.ServerCPU)
	row("  other users meanwhile", r.OneUser.Others, nil)
	row(fmt.Sprintf("1 user × %d sessions, again", r.Sessions), r.OneUserAgain.Refresh, r.OneUserAgain.ServerCPU)
	row("  other users meanwhile", r.OneUserAgain.Others, nil)
	row(fmt.Sprintf("%d users × 1 session, again", r.Sessions), r.ManyUsersAgain.Refresh, r.ManyUsersAgain.ServerCPU)
	row("  other users meanwhile", r.ManyUsersAgain.Others, nil)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "server CPU/request\twhile the other users refresh too: per request of either\n")
	fmt.Fprintf(tw, "one user ÷ many users\trefresh rate %.2f\n", r.RateRatio)
	fmt.Fprintf(tw, "other users' p99\t%.2f× while one user refreshes vs while many do; %.2f× vs alone\n", r.OthersP99Ratio, r.OthersP99ToAlone)
	fmt.Fprintf(tw, "list the big user's sessions\t%d sessions, %d bytes, %d page(s), %.1f ms\n", r.List.Sessions, r.List.Bytes, r.List.Pages, r.List.MS)
	tw.Flush()
}
