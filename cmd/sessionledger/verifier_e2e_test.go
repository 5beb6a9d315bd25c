package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/internal/poll"
)

var (
	exampleOnce sync.Once
	exampleBin  string
	exampleErr  error
)

// buildExample builds cmd/example-api once per test run.
func buildExample(tb testing.TB) string {
	tb.Helper()
	exampleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "example-api")
		if err != nil {
			exampleErr = err
			return
		}
		exampleBin = filepath.Join(dir, "example-api")
		out, err := exec.Command("go", "build", "-o", exampleBin, "github.com/sessionledger/sessionledger/cmd/example-api").CombinedOutput()
		if err != nil {
			exampleErr = fmt.Errorf("go build example-api: %v\n%s", err, out)
		}
	})
	if exampleErr != nil {
		tb.Fatal(exampleErr)
	}
	return exampleBin
}

// startExample runs the example service beside the ledger of h, in its own process.
func startExample(tb testing.TB, h *ledgerHarness) string {
	tb.Helper()
	return startExampleWith(tb, h, h.m.NATSURL(), nil)
}

// startExampleWith runs the example service beside the ledger of h, reading
// revocations from natsURL, with env added to its environment and extra flags.
func startExampleWith(tb testing.TB, h *ledgerHarness, natsURL string, env []string, extra ...string) string {
	tb.Helper()
	cmd := exec.Command(buildExample(tb), append([]string{"--listen", "127.0.0.1:0", "--ledger-url", h.url,
		"--issuer", "http://ledger.test", "--nats-url", natsURL}, extra...)...)
	cmd.Env = append(os.Environ(), env...)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var url string
	poll.Until(tb, 20*time.Second, func() error {
		if url == "" {
			for _, line := range strings.Split(logs.String(), "\n") {
				var rec struct{ Msg, Addr string }
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "example-api listening" {
					url = "http://" + rec.Addr
				}
			}
			if url == "" {
				return fmt.Errorf("example-api did not start:\n%s", logs.String())
			}
		}
		// Ready once it has replayed recent revocations.
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("example-api /healthz: %d", resp.StatusCode)
		}
		return nil
	})
	return url
}

// me calls the example service with an access token and returns the status.
func me(tb testing.TB, client *http.Client, url, token string) (int, string) {
	req, err := http.NewRequest("GET", url+"/me", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

func TestVerifierInAnotherProcessDropsRevokedSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a child process")
	}
	h := boot(t, "", nil)
	api := startExample(t, h)
	client := &http.Client{Timeout: 5 * time.Second}

	s := h.issue(`{"user_id":"alice","claims":{"plan":"pro"}}`)
	if st, _ := me(t, client, api, s.Access); st != 200 {
		t.Fatalf("valid token refused by the other service: %d", st)
	}
	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	revoked := time.Now()
	var auth string
	poll.Until(t, 5*time.Second, func() error {
		var st int
		if st, auth = me(t, client, api, s.Access); st != http.StatusUnauthorized {
			return fmt.Errorf("the other service still accepts a revoked session's unexpired token: %d", st)
		}
		return nil
	})
	t.Logf("refused %v after the revoke call returned", time.Since(revoked))
	if !strings.Contains(auth, `error="invalid_token"`) {
		t.Fatalf("WWW-Authenticate %q", auth)
	}

	// A user cut-off and a sign-out reach it too.
	b := h.issue(`{"user_id":"bob"}`)
	c := h.issue(`{"user_id":"carol"}`)
	h.mustAdmin("DELETE", "/v1/users/bob/sessions", "", http.StatusNoContent)
	h.mustForm("/oauth2/revoke", map[string][]string{"token": {c.Refresh}}, nil, http.StatusOK)
	poll.For(t, 5*time.Second, func() bool {
		st1, _ := me(t, client, api, b.Access)
		st2, _ := me(t, client, api, c.Access)
		return st1 == 401 && st2 == 401
	}, func() string { return "revoke-all or sign-out not applied by the other service" })
}

// BenchmarkRevokeToReject measures the time from the revoke call's response
// to the first refusal by a verifier in another process (the example
// service), over loopback.
func BenchmarkRevokeToReject(b *testing.B) {
	h := boot(b, "", nil)
	api := startExample(b, h)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 5 * time.Second}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := h.issue(`{"user_id":"bench"}`)
		if st, _ := me(b, client, api, s.Access); st != 200 {
			b.Fatalf("valid token refused: %d", st)
		}
		b.StartTimer()
		h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
		revoked := time.Now()
		// Ask again at once: the interval would add to the latency measured.
		poll.Every(b, 0, 5*time.Second, func() error {
			if st, _ := me(b, client, api, s.Access); st != http.StatusUnauthorized {
				return fmt.Errorf("a revoked session's token is still accepted: %d", st)
			}
			return nil
		})
		lat = append(lat, time.Since(revoked))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

func TestTailFollowsRevocations(t *testing.T) {
	h := boot(t, "", nil)
	s := h.issue(`{"user_id":"alice"}`)
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"tail", "--nats-url", h.m.NATSURL()}, out, out) }()
	poll.For(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "TIME") }, func() string { return out.String() })
	h.mustAdmin("DELETE", "/v1/sessions/"+s.ID, "", http.StatusNoContent)
	poll.For(t, 5*time.Second, func() bool { return strings.Contains(out.String(), s.ID) }, func() string { return "tail printed:\n" + out.String() })
	line := out.String()[strings.Index(out.String(), s.ID)-60:]
	if !strings.Contains(line, "session.revoked") || !strings.Contains(line, "admin_revoked") {
		t.Fatalf("tail line: %s", line)
	}
	if strings.Contains(out.String(), s.Refresh) {
		t.Fatal("tail printed a token")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail: %v", err)
	}
}
