package main

import (
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"
)

// refreshResult is one response a load client saw.
type refreshResult struct {
	at      time.Time
	status  int
	session string
	token   string // the refresh token returned (200)
	retryAt string // Retry-After (503)
}

// refreshLoad is one client per session refreshing in a loop, as real clients
// do: a 200 replaces the token held, anything else (or no answer) is retried
// with the same token.
type refreshLoad struct {
	t       *testing.T
	held    []session
	mu      sync.Mutex
	results []refreshResult
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startRefreshLoad starts the clients; base(n) is the ledger a client's nth
// request goes to.
func startRefreshLoad(t *testing.T, held []session, base func(n int) string) *refreshLoad {
	l := &refreshLoad{t: t, held: held, stop: make(chan struct{})}
	for i := range held {
		l.wg.Add(1)
		go func(i int) {
			defer l.wg.Done()
			httpc := &http.Client{Timeout: 20 * time.Second}
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := httpc.PostForm(base(n)+"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {l.held[i].Refresh}})
				if err != nil { // the ledger is down: retry the same token
					time.Sleep(20 * time.Millisecond)
					continue
				}
				r := refreshResult{at: time.Now(), status: resp.StatusCode, session: l.held[i].ID, retryAt: resp.Header.Get("Retry-After")}
				var body map[string]any
				_ = jsonDecode(resp, &body)
				if r.status == http.StatusOK {
					r.token = body["refresh_token"].(string)
					l.held[i].Refresh = r.token
				} else {
					time.Sleep(20 * time.Millisecond)
				}
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
			}
		}(i)
	}
	return l
}

// succeededAfter counts the successful refreshes completed after since.
func (l *refreshLoad) succeededAfter(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if r.status == http.StatusOK && r.at.After(since) {
			n++
		}
	}
	return n
}

// waitForMore waits until n more refreshes succeed than have so far.
func (l *refreshLoad) waitForMore(n int) {
	l.t.Helper()
	since := time.Now()
	poll.For(l.t, 60*time.Second, func() bool { return l.succeededAfter(since) >= n }, func() string { return "refreshes did not resume" })
}

// finish stops the clients and returns what they saw; held has their newest tokens.
func (l *refreshLoad) finish() []refreshResult {
	close(l.stop)
	l.wg.Wait()
	return l.results
}
