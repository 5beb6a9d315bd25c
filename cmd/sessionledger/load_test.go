package main

import (
	"fmt"
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
	base    string // the ledger that answered
	status  int
	session string
	token   string // the refresh token returned (200)
	retryAt string // Retry-After (503)
	refusal string // error and error_description (not 200)
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

// retryPause is how long a client waits before retrying after a refusal or no
// answer, as a real client would: it paces the load, it is no check.
const retryPause = 20 * time.Millisecond

// startRefreshLoad starts the clients; base(n) is the ledger a client's nth
// request goes to.
func startRefreshLoad(t *testing.T, held []session, base func(n int) string) *refreshLoad {
	l := &refreshLoad{t: t, held: held, stop: make(chan struct{})}
	for i := range held {
		l.wg.Add(1)
		go func(i int) {
			defer l.wg.Done()
			// Its own connections, closed when it stops: none is left idle
			// to hold up a ledger's graceful shutdown.
			httpc := &http.Client{Transport: &http.Transport{}, Timeout: 20 * time.Second}
			defer httpc.CloseIdleConnections()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				b := base(n)
				resp, err := httpc.PostForm(b+"/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {l.held[i].Refresh}})
				if err != nil { // the ledger is down: retry the same token
					time.Sleep(retryPause)
					continue
				}
				r := refreshResult{at: time.Now(), base: b, status: resp.StatusCode, session: l.held[i].ID, retryAt: resp.Header.Get("Retry-After")}
				var body map[string]any
				err = jsonDecode(resp, &body)
				if tok, ok := body["refresh_token"].(string); err == nil && r.status == http.StatusOK && ok {
					r.token = tok
					l.held[i].Refresh = r.token
				} else {
					r.refusal = fmt.Sprintf("%v: %v (%v)", body["error"], body["error_description"], err)
					time.Sleep(retryPause)
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
	poll.For(l.t, 60*time.Second, func() bool { return l.succeededAfter(since) >= n }, func() string {
		return fmt.Sprintf("refreshes did not resume: %d of %d succeeded; answers since: %v", l.succeededAfter(since), n, l.answersAfter(since))
	})
}

// answersAfter counts the answers completed after since by status and refusal.
func (l *refreshLoad) answersAfter(since time.Time) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]int{}
	for _, r := range l.results {
		if r.at.After(since) {
			seen[fmt.Sprintf("%d %s", r.status, r.refusal)]++
		}
	}
	return seen
}

// finish stops the clients and returns what they saw; held has their newest tokens.
func (l *refreshLoad) finish() []refreshResult {
	close(l.stop)
	l.wg.Wait()
	return l.results
}
