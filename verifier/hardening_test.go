package verifier_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/ledger"
	"github.com/sessionledger/sessionledger/verifier"
)

// TestVerifyRefusesOversizedTokensFirst: a token longer than MaxTokenLength
// is refused with ErrTooLong before anything else: its header is not decoded
// (an unknown kid in it would make the verifier refetch the JWKS, as it does
// for the same header on a token of normal size), it is not looked up in the
// cache, and nothing is allocated. Before, a 1 MiB token cost 40-90 ms and
// 112 700 allocations (BenchmarkVerifyCost/refused-1MiB); now it costs what
// a comparison does (a few ns, against about 100 ns for a cached token).
func TestVerifyRefusesOversizedTokensFirst(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{JWKSRefetchInterval: time.Nanosecond})
	ctx := context.Background()
	unknownKid := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"rotated","typ":"at+jwt"}`)) + ".x.y"

	hits := e.jwksHits.Load()
	if _, err := v.Verify(ctx, oversizedToken(t, unknownKid, 4<<10)); !errors.Is(err, verifier.ErrInvalid) || errors.Is(err, verifier.ErrTooLong) {
		t.Fatalf("a 4 KiB token with an unknown kid: err %v, want ErrInvalid and not ErrTooLong", err)
	}
	if e.jwksHits.Load() == hits {
		t.Fatal("an unknown kid in a token of normal size did not refetch the JWKS: the test cannot tell whether a header was decoded")
	}
	for name, tok := range map[string]string{
		"1 MiB":                    oversizedToken(t, unknownKid, 1<<20),
		"MaxTokenLength + 1 bytes": oversizedToken(t, unknownKid, verifier.MaxTokenLength+32)[:verifier.MaxTokenLength+1],
	} {
		hits := e.jwksHits.Load()
		_, err := v.Verify(ctx, tok)
		if !errors.Is(err, verifier.ErrTooLong) || !errors.Is(err, verifier.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrTooLong (and ErrInvalid)", name, err)
		}
		allocs := testing.AllocsPerRun(100, func() { _, _ = v.Verify(ctx, tok) })
		t.Logf("%s (%d bytes): %v; %.0f allocations per Verify", name, len(tok), err, allocs)
		if allocs != 0 {
			t.Errorf("%s: %.0f allocations per Verify, want 0", name, allocs)
		}
		if got := e.jwksHits.Load() - hits; got != 0 {
			t.Errorf("%s: %d JWKS fetches: its header was decoded", name, got)
		}
	}
}

// TestVerifyRefusesMalleatedTokens: once a genuine token is verified (and
// cached), no other encoding of it is accepted: a signature with its
// trailing bits set or a line break inside (which golang-jwt's default
// parser, the verifier's before, accepted), '=' padding, a signature of the
// wrong size, or the wrong number of segments.
func TestVerifyRefusesMalleatedTokens(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{})
	ctx := context.Background()
	issued := e.issue("mallory")
	c, err := v.Verify(ctx, issued.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by the ledger's key with a jti that gives the payload trailing
	// bits too (header and signature always have them).
	var tok string
	for i := 0; tok == "" || len(strings.Split(tok, ".")[1])%4 == 0; i++ {
		if tok, err = e.signer.Sign(accesstoken.Claims{Subject: c.Subject, SessionID: c.SessionID, SessionSeq: c.SessionSeq, ID: c.ID + strings.Repeat("x", i), IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("the genuine token is refused: %v", err)
	}
	segs := strings.Split(tok, ".")
	with := func(i int, seg string) string {
		s := append([]string(nil), segs...)
		s[i] = seg
		return strings.Join(s, ".")
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	sig, _ := base64.RawURLEncoding.DecodeString(segs[2])
	variants := map[string]string{
		"two segments":      segs[0] + "." + segs[1],
		"four segments":     tok + "." + segs[2],
		"63-byte signature": with(2, base64.RawURLEncoding.EncodeToString(sig[:63])),
		"65-byte signature": with(2, base64.RawURLEncoding.EncodeToString(append(sig, 0))),
	}
	for i, name := range []string{"header", "payload", "signature"} {
		seg := segs[i]
		last := strings.IndexByte(alphabet, seg[len(seg)-1])
		variants[name+": trailing bit set"] = with(i, seg[:len(seg)-1]+string(alphabet[last^1]))
		variants[name+": '=' padding"] = with(i, seg+strings.Repeat("=", 4-len(seg)%4))
		variants[name+": LF inside"] = with(i, seg[:8]+"\n"+seg[8:])
	}
	for name, bad := range variants {
		if _, err := v.Verify(ctx, bad); !errors.Is(err, verifier.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", name, err)
		}
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("the genuine token is refused after its variants: %v", err)
	}
}

// TestLargestLedgerTokenVerifies: the largest token the ledger issues (a
// 255-byte user id and 4096 bytes of custom claims, all '<', which JSON
// escapes to six bytes each) is well within MaxTokenLength and verifies.
func TestLargestLedgerTokenVerifies(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(verifier.Config{})
	user := strings.Repeat("<", ledger.MaxUserIDLen)
	name := strings.Repeat("<", (ledger.MaxClaimsLen-7)/2)
	value := strings.Repeat("<", ledger.MaxClaimsLen-7-len(name))
	claims := fmt.Sprintf(`{"%s":"%s"}`, name, value)
	if len(claims) != ledger.MaxClaimsLen {
		t.Fatalf("claims of %d bytes, want %d", len(claims), ledger.MaxClaimsLen)
	}
	p, err := e.ledger.Issue(context.Background(), ledger.IssueRequest{UserID: user, Claims: []byte(claims)})
	if err != nil {
		t.Fatal(err)
	}
	typical := e.issue("alice").AccessToken
	t.Logf("largest token: %d bytes (MaxTokenLength %d); a typical one: %d bytes", len(p.AccessToken), verifier.MaxTokenLength, len(typical))
	if len(p.AccessToken) > verifier.MaxTokenLength*3/5 {
		t.Errorf("the largest token the ledger issues is %d bytes, too close to MaxTokenLength (%d)", len(p.AccessToken), verifier.MaxTokenLength)
	}
	c, err := v.Verify(context.Background(), p.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != user || c.Custom[name] != value {
		t.Fatalf("the claims do not round-trip: sub %d bytes, custom %d members", len(c.Subject), len(c.Custom))
	}
}
