package main

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkRefresh measures POST /oauth2/token through the whole binary over
// loopback: HTTP, decision, JetStream append with optimistic concurrency,
// waiting for the projection, JWT signing. Each client chains its own refresh
// tokens, since rotation makes every token single-use.
func BenchmarkRefresh(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			h := boot(b, "", nil)
			benchRefreshes(b, h, clients, func(rt string) (string, error) {
				st, body := h.refresh(rt)
				if st != http.StatusOK {
					return "", fmt.Errorf("refresh: %d %v", st, body)
				}
				return body["refresh_token"].(string), nil
			})
		})
	}
}

// BenchmarkBrowserRefresh compares, on a ledger in cookie mode, a refresh
// by a page (POST /browser/refresh: the token in the cookie, the Origin
// and JSON checks, CORS headers) with one by a token-mode client
// (POST /oauth2/token, which passes the CORS middleware's skipper).
func BenchmarkBrowserRefresh(b *testing.B) {
	for _, endpoint := range []string{"oauth2-token", "browser-refresh"} {
		b.Run("endpoint="+endpoint+"/clients=16", func(b *testing.B) {
			h := boot(b, "", func(c *Config) {
				c.Issuer, c.BrowserOrigins = "https://ledger.example.com", []string{appOrigin}
			})
			benchRefreshes(b, h, 16, func(rt string) (string, error) {
				if endpoint == "oauth2-token" {
					st, body := h.refresh(rt)
					if st != http.StatusOK {
						return "", fmt.Errorf("refresh: %d %v", st, body)
					}
					return body["refresh_token"].(string), nil
				}
				r := h.browserPost("/browser/refresh", appOrigin, "application/json", "", rt)
				if r.status != http.StatusOK || r.cookie == nil {
					return "", fmt.Errorf("browser refresh: %d %s", r.status, r.raw)
				}
				return r.cookie.Value, nil
			})
		})
	}
}

// benchRefreshes runs b.N refreshes by clients concurrent clients, each
// with a session of its own, and reports latency percentiles and the rate.
func benchRefreshes(b *testing.B, h *ledgerHarness, clients int, refresh func(rt string) (string, error)) {
	h.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 30 * time.Second}
	tokens := make([]string, clients)
	for i := range tokens {
		tokens[i] = h.issue(fmt.Sprintf(`{"user_id":"bench-%d"}`, i)).Refresh
	}
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + clients - 1) / clients
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			mine := make([]time.Duration, 0, per)
			rt := tokens[c]
			for i := 0; i < per; i++ {
				start := time.Now()
				next, err := refresh(rt)
				mine = append(mine, time.Since(start))
				if err != nil {
					b.Error(err)
					return
				}
				rt = next
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "refresh/s")
	}
}
