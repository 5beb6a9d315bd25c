package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/poll"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/secrets"
)

// bootCluster starts a 3-node JetStream cluster and n ledger instances on it
// that share one data dir (for their keys) and an R3 stream.
func bootCluster(t *testing.T, n int) (*natstest.Cluster, []*ledgerHarness, string) {
	t.Helper()
	return bootClusterWith(t, n, nil)
}

// bootClusterWith is bootCluster with the instances' configuration changed
// by mutate.
func bootClusterWith(t *testing.T, n int, mutate func(*Config)) (*natstest.Cluster, []*ledgerHarness, string) {
	t.Helper()
	c := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(c.URLs(), nats.UserInfo(natstest.LedgerAuth.User, natstest.LedgerAuth.Password))
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, func() error { // the stream can be created once the cluster has settled
		_, err := eventstore.Open(context.Background(), nc, eventstore.Config{Replicas: 3})
		return err
	})
	nc.Close()
	dir := t.TempDir()
	var hs []*ledgerHarness
	for i := 0; i < n; i++ {
		hs = append(hs, boot(t, dir, func(cfg *Config) {
			cfg.NATSURL, cfg.NATSAuth, cfg.Replicas = c.URLs(), natstest.LedgerAuth, 3
			cfg.CheckpointInterval = 200 * time.Millisecond // as in production, both instances write them
			if mutate != nil {
				mutate(cfg)
			}
		}))
	}
	return c, hs, dir
}

func TestAnyInstanceAnswersForAnySession(t *testing.T) {
	_, hs, _ := bootCluster(t, 2)
	a, b := hs[0], hs[1]
	// Issued on A, refreshed on B at once: B catches up with the session first.
	for i := 0; i < 20; i++ {
		s := a.issue(fmt.Sprintf(`{"user_id":"u%d"}`, i))
		s1 := b.mustRefresh(s.Refresh)
		if !a.active(s1.Refresh) {
			t.Fatal("A does not see B's rotation")
		}
		a.mustRefresh(s1.Refresh)
	}
	// Reuse detected on B makes A refuse the family at once.
	s := a.issue(`{"user_id":"mallory-victim"}`)
	s1 := a.mustRefresh(s.Refresh)
	s2 := a.mustRefresh(s1.Refresh)
	b.wantInvalidGrant(s.Refresh)
	a.wantInvalidGrant(s2.Refresh)
	// Concurrent refreshes of one token split across both instances: one successor.
	c := a.issue(`{"user_id":"tabs"}`)
	var wg sync.WaitGroup
	got := make([]string, 10)
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h := hs[i%2]
			st, body := h.refresh(c.Refresh)
			if st != http.StatusOK {
				t.Errorf("refresh %d on instance %d: %d %v", i, i%2, st, body)
				return
			}
			got[i] = body["refresh_token"].(string)
		}(i)
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] {
			t.Fatal("concurrent refreshes across instances forked the family")
		}
	}
	// Deactivation on one instance refuses issue on the other.
	b.mustAdmin("POST", "/v1/users/eve/deactivate", "", http.StatusNoContent)
	if st, _ := a.admin("POST", "/v1/sessions", `{"user_id":"eve"}`); st != http.StatusConflict {
		t.Fatalf("issue on A after deactivation on B: %d", st)
	}
}

// failoverStallBound is the longest a stream-leader failover may leave a
// ledger instance without a successful refresh: the request budget
// (ledger.DefaultRequestTimeout, 5 s). Within it, a client whose refresh
// timed out with a 503 after its rotation was stored retries within 10 s of
// that rotation, inside the default reuse grace window, and gets the same
// successor; a longer stall lets the retry be taken for token theft.
const failoverStallBound = ledger.DefaultRequestTimeout

// TestFailoverOfTheStreamLeader shuts the stream leader's server down under
// load. Clients see only 200, or 503 with Retry-After; no instance goes
// failoverStallBound without a successful refresh; every token handed out is
// in the stream, once; and every session refreshes afterwards with the newest
// token its client holds.
func TestFailoverOfTheStreamLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster failover")
	}
	if ledger.DefaultReuseGrace < 2*failoverStallBound {
		t.Fatalf("reuse grace %v is not twice the stall bound %v", ledger.DefaultReuseGrace, failoverStallBound)
	}
	c, hs, dir := bootCluster(t, 2)
	keys, err := secrets.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokenKeys := domain.TokenKeys{DigestKeyID: keys.DigestKeyID, DigestKey: keys.DigestKey, SuccessorKey: keys.SuccessorKey}

	const clients = 8
	held := make([]session, clients)
	for i := range held {
		held[i] = hs[i%2].issue(fmt.Sprintf(`{"user_id":"client-%d"}`, i))
	}
	load := startRefreshLoad(t, held, func(n int) string { return hs[n%2].url }) // a load balancer alternating between the instances
	load.waitForMore(20 * clients)                                               // every client is under way
	leader := c.StreamLeader(eventstore.StreamName)
	if leader < 0 {
		t.Fatal("no stream leader")
	}
	down := time.Now()
	c.Stop(leader)
	t.Logf("stream leader n%d shut down", leader+1)
	load.waitForMore(200) // refreshes go on with the new leader
	results := load.finish()
	end := time.Now()

	// What clients saw: only 200, or 503 with Retry-After.
	var oks, unavailable, others int
	for _, r := range results {
		switch {
		case r.status == http.StatusOK:
			oks++
		case r.status == http.StatusServiceUnavailable && r.retryAt != "":
			unavailable++
		default:
			if others++; others == 1 {
				t.Errorf("client saw status %d (Retry-After %q, %s) %v after the shutdown, for session %s", r.status, r.retryAt, r.refusal, r.at.Sub(down), r.session)
			}
		}
	}
	if others > 1 {
		t.Errorf("and %d more answers other than 200 or 503 with Retry-After", others-1)
	}
	window := longestStall(results, down, end, func(refreshResult) bool { return true })
	t.Logf("%d refreshes succeeded, %d answered 503; longest time without a successful refresh: %v", oks, unavailable, window.Round(time.Millisecond))
	for i, h := range hs {
		stall := longestStall(results, down, end, func(r refreshResult) bool { return r.base == h.url })
		t.Logf("instance %d: longest time without a successful refresh: %v", i, stall.Round(time.Millisecond))
		if stall >= failoverStallBound {
			t.Errorf("instance %d went %v without a successful refresh, want under %v", i, stall.Round(time.Millisecond), failoverStallBound)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	checkRefreshesInStream(t, hs[0].streamMessages(), results, tokenKeys)
	// Every session works afterwards with the newest token its client holds.
	for i := range held {
		held[i] = hs[i%2].mustRefresh(held[i].Refresh)
		hs[(i+1)%2].mustRefresh(held[i].Refresh)
	}
	c.Restart(t, leader)
}

// longestStall is the longest time after since without a successful refresh
// among the results that match: between two successive ones, or from the
// last one to end when none came after since.
func longestStall(results []refreshResult, since, end time.Time, match func(refreshResult) bool) time.Duration {
	var oks []time.Time
	for _, r := range results {
		if r.status == http.StatusOK && match(r) {
			oks = append(oks, r.at)
		}
	}
	slices.SortFunc(oks, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	prev := since
	for _, at := range oks {
		if at.After(since) {
			longest = max(longest, at.Sub(prev))
		}
		prev = at
	}
	if len(oks) == 0 || !oks[len(oks)-1].After(since) {
		longest = max(longest, end.Sub(prev))
	}
	return longest
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return jsonNewDecoder(resp).Decode(v)
}

func jsonNewDecoder(resp *http.Response) *json.Decoder { return json.NewDecoder(resp.Body) }

func TestInstancesShareKeysThroughTheEnvironment(t *testing.T) {
	srv := natstest.StartAccounts(t)
	a := boot(t, "", func(c *Config) { c.NATSURL, c.NATSAuth = srv.ClientURL(), natstest.LedgerAuth })
	keys, err := os.ReadFile(filepath.Join(a.dataDir, secrets.KeysFile))
	if err != nil {
		t.Fatal(err)
	}
	// B has a data dir of its own but gets A's keys as SESSIONLEDGER_KEYS.
	b := boot(t, "", func(c *Config) { c.NATSURL, c.NATSAuth, c.Keys = srv.ClientURL(), natstest.LedgerAuth, string(keys) })
	s := a.issue(`{"user_id":"alice"}`)
	s1 := b.mustRefresh(s.Refresh)
	verifyAccessToken(t, jwksKeys(t, a), s1.Access) // signed by B with the shared key
	if _, err := os.Stat(filepath.Join(b.dataDir, secrets.KeysFile)); err == nil {
		t.Fatal("B wrote keys of its own although it was given them")
	}
}

// checkRefreshesInStream requires that every refresh token a client received
// (a 200 in results) is in the stream, as the digest of the one rotation to
// its generation, and that no session was rotated twice to one generation.
func checkRefreshesInStream(t *testing.T, msgs []*jetstream.RawStreamMsg, results []refreshResult, keys domain.TokenKeys) {
	t.Helper()
	rotations := map[string]map[uint32]int{} // session → generation → events
	digests := map[string]map[uint32]domain.Digest{}
	for _, m := range msgs {
		if m.Subject == integrity.CheckpointSubject {
			continue
		}
		e, err := domain.DecodeEvent(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := e.Data.(domain.SessionRotated); ok {
			if rotations[e.SessionID] == nil {
				rotations[e.SessionID], digests[e.SessionID] = map[uint32]int{}, map[uint32]domain.Digest{}
			}
			rotations[e.SessionID][r.Generation]++
			digests[e.SessionID][r.Generation] = r.RefreshToken
		}
	}
	for sid, gens := range rotations {
		for g, n := range gens {
			if n != 1 {
				t.Fatalf("session %s rotated to generation %d %d times", sid, g, n)
			}
		}
	}
	oks := 0
	for _, r := range results {
		if r.status != http.StatusOK {
			continue
		}
		oks++
		tok, err := domain.ParseRefreshToken(r.token)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := digests[r.session][tok.Generation]
		if !ok || !keys.Matches(tok, want) {
			t.Fatalf("a refresh token handed out (session %s, generation %d) is not in the stream", r.session, tok.Generation)
		}
	}
	if oks == 0 {
		t.Fatal("no successful refresh to check")
	}
}
