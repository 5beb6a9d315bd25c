package verifier

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
)

// TestCacheStaysWithinCacheSize: the cache of verified tokens never holds
// more than CacheSize, even one smaller than 10 (a tenth of which is none).
func TestCacheStaysWithinCacheSize(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := accesstoken.NewSigner("https://ledger.test", "api", accesstoken.NewEd25519Key(priv))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(s.JWKS()) }))
	defer srv.Close()
	for _, size := range []int{1, 5, 20} {
		v, err := New(context.Background(), Config{JWKSURL: srv.URL, Issuer: "https://ledger.test", Audience: "api", CacheSize: size}, idleFeed{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for i := range 50 {
			tok, err := s.Sign(accesstoken.Claims{Subject: "alice", SessionID: "S1", SessionSeq: 1, ID: fmt.Sprint(i), IssuedAt: now, ExpiresAt: now.Add(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
		}
		v.cacheMu.RLock()
		got := len(v.cache)
		v.cacheMu.RUnlock()
		v.Close()
		if got > size {
			t.Errorf("CacheSize %d: %d tokens cached after 50", size, got)
		}
	}
}
