package verifier

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/domain"
)

// idleFeed is a revocation feed that is caught up and carries nothing.
type idleFeed struct{}

func (idleFeed) Follow(ctx context.Context, _ time.Time, _ func(domain.Event), _ func(uint64, error), caughtUp func()) error {
	caughtUp()
	<-ctx.Done()
	return nil
}

func (idleFeed) Connected() bool { return true }

// TestJWKSResponseIsBounded: a JWKS response of more than maxJWKSSize bytes
// is refused with an error that says so, whether it declares its length or
// is chunked, instead of being read in part; one of exactly maxJWKSSize
// bytes is taken.
func TestJWKSResponseIsBounded(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	s, err := accesstoken.NewSigner("https://ledger.test", "api", accesstoken.NewEd25519Key(priv))
	if err != nil {
		t.Fatal(err)
	}
	padded := func(n int) []byte { // the JWKS, then spaces up to n bytes
		return append(bytes.Clone(s.JWKS()), bytes.Repeat([]byte(" "), n-len(s.JWKS()))...)
	}
	for _, tc := range []struct {
		name     string
		body     []byte
		declared bool // Content-Length set; otherwise chunked
		wantErr  string
	}{
		{"exactly the limit, declared", padded(maxJWKSSize), true, ""},
		{"exactly the limit, chunked", padded(maxJWKSSize), false, ""},
		{"one byte over, declared", padded(maxJWKSSize + 1), true, "more than 1048576"},
		{"one byte over, chunked", padded(maxJWKSSize + 1), false, "more than 1048576"},
		{"64 MiB, chunked", padded(64 << 20), false, "more than 1048576"},
		{"the JWKS and then junk", append(bytes.Clone(s.JWKS()), "junk"...), true, "invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.declared {
					w.Header().Set("Content-Length", strconv.Itoa(len(tc.body)))
				} else {
					w.(http.Flusher).Flush() // headers out now: chunked
				}
				_, _ = w.Write(tc.body)
			}))
			defer srv.Close()
			v, err := New(context.Background(), Config{JWKSURL: srv.URL, Issuer: "https://ledger.test", Audience: "api"}, idleFeed{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				v.Close()
				return
			}
			if err == nil {
				v.Close()
				t.Fatalf("a JWKS of %d bytes was taken", len(tc.body))
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want it to say %q", err, tc.wantErr)
			}
		})
	}
}

// TestNewKeyIsFetchedWithinTheServedMaxAge: a token of a key published after
// the verifier fetched the JWKS verifies once the served max-age has passed,
// though the refetch interval (30 s by default) has not; served without a
// max-age, the refetch interval holds. The ledger publishes each key for
// longer than the max-age it serves before signing with it.
func TestNewKeyIsFetchedWithinTheServedMaxAge(t *testing.T) {
	for _, tc := range []struct {
		cacheControl string
		want         bool
	}{{"public, max-age=1", true}, {"", false}} {
		t.Run("Cache-Control "+tc.cacheControl, func(t *testing.T) {
			oldKey, newKey := mustKey(t, accesstoken.ES256), mustKey(t, accesstoken.RS256)
			s, err := accesstoken.NewSigner("https://ledger.test", "api", oldKey)
			if err != nil {
				t.Fatal(err)
			}
			var jwks atomic.Pointer[[]byte]
			b := s.JWKS()
			jwks.Store(&b)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.cacheControl != "" {
					w.Header().Set("Cache-Control", tc.cacheControl)
				}
				_, _ = w.Write(*jwks.Load())
			}))
			defer srv.Close()
			v, err := New(context.Background(), Config{JWKSURL: srv.URL, Issuer: "https://ledger.test", Audience: "api"}, idleFeed{})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()

			// The new key is published; a moment later it signs.
			if err := s.SetKeys(oldKey, newKey); err != nil {
				t.Fatal(err)
			}
			b = s.JWKS()
			jwks.Store(&b)
			time.Sleep(1100 * time.Millisecond)
			if err := s.SetKeys(newKey, oldKey); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			token, err := s.Sign(accesstoken.Claims{Subject: "alice", SessionID: "s1", ID: "j1", IssuedAt: now, ExpiresAt: now.Add(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(context.Background(), token)
			if got := err == nil; got != tc.want {
				t.Fatalf("verified: %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func mustKey(t *testing.T, alg string) *accesstoken.Key {
	t.Helper()
	k, err := accesstoken.NewRandomKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
