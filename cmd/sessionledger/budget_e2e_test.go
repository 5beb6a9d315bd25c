package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"
)

// TestNoRequestOutlivesItsBudget stalls the stream (two of the cluster's
// three servers stop, so it has no quorum) and sends every kind of request
// to both instances: to one that holds the session and, with a refresh token
// of a session nobody holds, through the lookups of one that does not. Each
// is answered 503 with Retry-After within the one request budget, where
// before a request could retry step after step for about 19 s. Once the
// servers are back, the same session refreshes on both instances.
func TestNoRequestOutlivesItsBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster")
	}
	const budget = time.Second
	c, hs, _ := bootClusterWith(t, 2, func(cfg *Config) { cfg.RequestTimeout = budget })
	a, b := hs[0], hs[1]
	// Setting up, with the cluster just formed and a budget of a second: a
	// 503 is retried, as a client would.
	settled := func(h *ledgerHarness, method, path, body string, want int) map[string]any {
		t.Helper()
		var out map[string]any
		poll.Until(t, 30*time.Second, func() error {
			var st int
			if st, out = h.admin(method, path, body); st != want {
				return fmt.Errorf("%s %s: %d %v", method, path, st, out)
			}
			return nil
		})
		return out
	}
	s := toSession(settled(a, "POST", "/v1/sessions", `{"user_id":"alice"}`, http.StatusCreated))
	poll.Until(t, 30*time.Second, func() error { // B holds it too
		if st, out := b.form("/oauth2/introspect", url.Values{"token": {s.Refresh}}, adminHeader); st != http.StatusOK || out["active"] != true {
			return fmt.Errorf("B: introspection %d %v", st, out)
		}
		return nil
	})
	// A genuine token of a session no instance holds (it ended): only the
	// stream can tell whether it was issued again a moment ago elsewhere.
	// (A token the ledger never issued is refused without asking it.)
	ended := toSession(settled(a, "POST", "/v1/sessions", `{"user_id":"erin"}`, http.StatusCreated))
	poll.Until(t, 30*time.Second, func() error {
		// 404 after a retry: the revoke that answered 503 did land.
		if st, out := a.admin("DELETE", "/v1/sessions/"+ended.ID, ""); st != http.StatusNoContent && st != http.StatusNotFound {
			return fmt.Errorf("revoke: %d %v", st, out)
		}
		return nil
	})

	leader := c.StreamLeader("LEDGER")
	var stopped []int
	for i := range c.Servers {
		if i != leader && len(stopped) < 2 {
			stopped = append(stopped, i)
		}
	}
	stopped[1] = leader // the leader and one follower: no quorum is left
	for _, i := range stopped {
		c.Stop(i)
	}
	t.Logf("stopped n%d and n%d (the stream leader was n%d)", stopped[0]+1, stopped[1]+1, leader+1)

	type call struct {
		name, method, path, contentType, body string
		admin                                 bool
	}
	form := func(v url.Values) string { return v.Encode() }
	calls := []call{
		{"refresh", "POST", "/oauth2/token", "application/x-www-form-urlencoded", form(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {s.Refresh}}), false},
		{"refresh of a session not held", "POST", "/oauth2/token", "application/x-www-form-urlencoded", form(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {ended.Refresh}}), false},
		{"sign-out", "POST", "/oauth2/revoke", "application/x-www-form-urlencoded", form(url.Values{"token": {s.Access}}), false},
		{"introspect access", "POST", "/oauth2/introspect", "application/x-www-form-urlencoded", form(url.Values{"token": {s.Access}}), true},
		{"introspect refresh", "POST", "/oauth2/introspect", "application/x-www-form-urlencoded", form(url.Values{"token": {s.Refresh}}), true},
		{"issue", "POST", "/v1/sessions", "application/json", `{"user_id":"bob"}`, true},
		{"list", "GET", "/v1/users/alice/sessions", "", "", true},
		{"history", "GET", "/v1/sessions/" + s.ID + "/events", "", "", true},
		{"revoke", "DELETE", "/v1/sessions/" + s.ID, "", "", true},
		{"revoke all", "DELETE", "/v1/users/alice/sessions", "", "", true},
		{"deactivate", "POST", "/v1/users/alice/deactivate", "", "", true},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	for i, h := range hs {
		for _, cl := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, err := http.NewRequest(cl.method, h.url+cl.path, strings.NewReader(cl.body))
				if err != nil {
					t.Error(err)
					return
				}
				if cl.contentType != "" {
					req.Header.Set("Content-Type", cl.contentType)
				}
				if cl.admin {
					req.Header.Set("Authorization", "Bearer "+testAdminToken)
				}
				start := time.Now()
				resp, err := h.client.Do(req)
				took := time.Since(start)
				mu.Lock()
				slowest = max(slowest, took)
				mu.Unlock()
				if err != nil {
					t.Errorf("instance %d, %s: %v", i, cl.name, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
					t.Errorf("instance %d, %s: %d (Retry-After %q), want 503 with Retry-After", i, cl.name, resp.StatusCode, resp.Header.Get("Retry-After"))
				}
				// The budget, and a little for the HTTP round trip.
				if took > budget+300*time.Millisecond {
					t.Errorf("instance %d, %s: answered after %v, budget %v", i, cl.name, took.Round(time.Millisecond), budget)
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("%d requests answered; the slowest after %v (budget %v)", 2*len(calls), slowest.Round(time.Millisecond), budget)
	if t.Failed() {
		t.FailNow()
	}

	for _, i := range stopped {
		c.Restart(t, i)
	}
	// Nothing was written meanwhile: the session is as it was, and refreshes
	// on both instances once the stream has a leader again.
	var next session
	poll.Until(t, 30*time.Second, func() error {
		st, body := a.refresh(s.Refresh)
		switch st {
		case http.StatusOK:
			next = toSession(body)
			return nil
		case http.StatusServiceUnavailable:
			return fmt.Errorf("refresh: %d %v", st, body)
		}
		t.Fatalf("refresh after the servers came back: %d %v", st, body)
		return nil
	})
	// B may still be resuming its consumer (lost with its server): until
	// it has applied A's rotation it answers 503, which a client retries.
	poll.Until(t, 30*time.Second, func() error {
		st, body := b.refresh(next.Refresh)
		switch st {
		case http.StatusOK:
			return nil
		case http.StatusServiceUnavailable:
			return fmt.Errorf("refresh on B: %d %v", st, body)
		}
		t.Fatalf("refresh on B after the servers came back: %d %v", st, body)
		return nil
	})
}
