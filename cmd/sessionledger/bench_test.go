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
						st, body := h.refresh(rt)
						mine = append(mine, time.Since(start))
						if st != http.StatusOK {
							b.Errorf("refresh: %d %v", st, body)
							return
						}
						rt = body["refresh_token"].(string)
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
		})
	}
}
