package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// scrape returns the value of one series in /metrics, or -1.
func scrape(t *testing.T, h *ledgerHarness, series string) float64 {
	t.Helper()
	resp, err := h.client.Get(h.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func TestMetrics(t *testing.T) {
	clock := newTestClock()
	// No sweep during the test: the refresh of the expired session below
	// meets the expiry itself, so its outcome is "expired", not "invalid".
	h := boot(t, "", func(c *Config) { c.Now, c.SweepInterval = clock.Now, time.Hour })
	s0 := h.issue(`{"user_id":"alice"}`)
	s1 := h.mustRefresh(s0.Refresh)
	h.mustRefresh(s0.Refresh)     // tolerated
	h.wantInvalidGrant("garbage") // invalid
	h.mustRefresh(s1.Refresh)
	h.wantInvalidGrant(s0.Refresh) // reused: family revoked
	e := h.issue(`{"user_id":"erin","policy":{"access_token_ttl":1,"absolute_lifetime":1,"inactivity_timeout":0}}`)
	clock.Advance(time.Second)
	h.wantInvalidGrant(e.Refresh) // expired

	// Concurrent refreshes of one token: conflicts, decided again.
	c := h.issue(`{"user_id":"tabs"}`)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, body := h.refresh(c.Refresh); st != http.StatusOK {
				t.Errorf("concurrent refresh: %d %v", st, body)
			}
		}()
	}
	wg.Wait()
	h.issue(`{"user_id":"bob"}`)

	for series, want := range map[string]float64{
		`sessionledger_refreshes_total{outcome="rotated"}`: 3,
		`sessionledger_refreshes_total{outcome="reused"}`:  1,
	} {
		if got := scrape(t, h, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := scrape(t, h, `sessionledger_refreshes_total{outcome="tolerated"}`); got != 8 {
		t.Errorf("tolerated = %v, want 8 (1 retry + 7 concurrent)", got)
	}
	if inv, exp := scrape(t, h, `sessionledger_refreshes_total{outcome="invalid"}`), scrape(t, h, `sessionledger_refreshes_total{outcome="expired"}`); inv != 1 || exp != 1 {
		t.Errorf("invalid %v, expired %v, want 1 each", inv, exp)
	}
	if got := scrape(t, h, `sessionledger_append_conflicts_total`); got < 1 {
		t.Errorf("append conflicts = %v after 8 concurrent refreshes of one token", got)
	}
	if got := scrape(t, h, `sessionledger_live_sessions`); got != 2 {
		t.Errorf("live sessions = %v, want 2 (tabs, bob)", got)
	}
	if got := scrape(t, h, `sessionledger_projection_lag_events`); got != 0 {
		t.Errorf("projection lag = %v", got)
	}
	if got := scrape(t, h, `sessionledger_refresh_duration_seconds_count{outcome="rotated"}`); got != 3 {
		t.Errorf("refresh latency histogram count = %v", got)
	}
	if got := scrape(t, h, `sessionledger_http_request_duration_seconds_count{code="201",method="POST",route="/v1/sessions"}`); got != 4 {
		t.Errorf("http histogram for issue = %v, want 4", got)
	}
	if got := scrape(t, h, `sessionledger_append_retries_total`); got != 0 {
		t.Errorf("append retries = %v on a healthy stream", got)
	}
}
