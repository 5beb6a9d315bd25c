package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// tokenServer answers refreshes of "t<n>" with "t<n+1>", once 503 to a token
// in flaky, and invalid_grant to any token starting with "dead".
func tokenServer(t *testing.T, flaky string) *httptest.Server {
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.PostFormValue("refresh_token")
		mu.Lock()
		defer mu.Unlock()
		switch {
		case tok == flaky:
			flaky = ""
			w.WriteHeader(http.StatusServiceUnavailable)
		case strings.HasPrefix(tok, "dead"):
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
		default:
			_, _ = w.Write([]byte(`{"refresh_token":"` + tok + `+"}`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestChainKeepsNewestTokens(t *testing.T) {
	srv := tokenServer(t, "b")
	tokens := [][]string{{"a", "dead"}, {"b"}}
	p := chain(context.Background(), srv.Client(), srv.URL, tokens, time.Now().Add(100*time.Millisecond), 0)
	if p.Dropped != 1 || p.Statuses[http.StatusServiceUnavailable] != 1 || p.Statuses[http.StatusBadRequest] != 1 || p.OK != p.Requests-2 {
		t.Fatalf("phase %+v: want one session dropped after a 400, one 503 retried, every other answer 200", p)
	}
	if len(tokens[0]) != 1 || len(tokens[1]) != 1 || !strings.HasPrefix(tokens[0][0], "a+") || !strings.HasPrefix(tokens[1][0], "b+") ||
		len(tokens[0][0])+len(tokens[1][0])-2 != p.OK {
		t.Fatalf("tokens after the phase %q: want each session's newest, one rotation per 200 (%d)", tokens, p.OK)
	}
}

func TestPacedKeepsItsRate(t *testing.T) {
	srv := tokenServer(t, "")
	d := 500 * time.Millisecond
	p := paced(context.Background(), srv.Client(), srv.URL, 200, time.Now().Add(d), func(i int) string { return "dead" })
	if p.Sent < 90 || p.Sent > 100 || p.Missed != 0 || p.OK != p.Sent || p.Requests != p.Sent {
		t.Fatalf("paced at 200/s for %v: %+v; want about 100 sent, all answered invalid_grant", d, p)
	}
}
