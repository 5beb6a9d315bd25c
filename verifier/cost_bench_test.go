package verifier_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/verifier"
)

// oversizedToken returns a forged token of size bytes: the ledger's own
// header (so its kid is known), a payload of valid JSON claims padded with
// small members up to the size (what costs a parser most if it decodes the
// claims before checking the signature), and a signature of zeros.
func oversizedToken(tb testing.TB, genuine string, size int) string {
	tb.Helper()
	header, _, _ := strings.Cut(genuine, ".")
	enc := base64.RawURLEncoding
	sig := enc.EncodeToString(make([]byte, ed25519.SignatureSize))
	room := enc.DecodedLen(size - len(header) - len(sig) - 2)
	var b strings.Builder
	fmt.Fprintf(&b, `{"iss":%q,"aud":%q,"sub":"mallory","sid":"S1","iat":%d,"exp":%d`, issuer, audience, time.Now().Unix(), time.Now().Add(time.Minute).Unix())
	for i := 0; b.Len() < room-16; i++ {
		fmt.Fprintf(&b, `,"f%08d":0`, i)
	}
	b.WriteByte('}')
	tok := header + "." + enc.EncodeToString([]byte(b.String())) + "." + sig
	if len(tok) > size || len(tok) < size-32 {
		tb.Fatalf("oversized token of %d bytes, want about %d", len(tok), size)
	}
	return tok
}

// BenchmarkVerifyCost compares, one goroutine at a time (so ns/op is the CPU
// of one verification), what the verifier spends on a token it has verified
// before (cached), on one it has not (first), and on tokens it refuses: a
// forged token of normal size (bad signature) and forged tokens of 64 KiB and
// of 1 MiB stuffed with claims.
func BenchmarkVerifyCost(b *testing.B) {
	e := newEnv(b)
	v := e.verifier(verifier.Config{})
	ctx := context.Background()
	genuine := e.issue("bench").AccessToken
	c, err := v.Verify(ctx, genuine)
	if err != nil {
		b.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	signing := genuine[:strings.LastIndexByte(genuine, '.')]
	forged := signing + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(other, []byte(signing)))

	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, genuine); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first", func(b *testing.B) {
		// 1024 tokens in turn through a cache of 10 that forgets one at
		// random when full: each has long been forgotten when it comes
		// round again, so every verification is a first one (plus the
		// eviction of one entry).
		cold := e.verifier(verifier.Config{CacheSize: 10})
		toks := make([]string, 1024)
		for i := range toks {
			toks[i], err = e.signer.Sign(accesstoken.Claims{
				Subject: c.Subject, SessionID: c.SessionID, SessionSeq: c.SessionSeq, ID: fmt.Sprintf("bench-%d", i),
				IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, Custom: []byte(`{"tenant":"t1"}`),
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := cold.Verify(ctx, toks[i%len(toks)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	for _, tc := range []struct {
		name string
		tok  string
	}{
		{"refused-forged-signature", forged},
		{"refused-64KiB", oversizedToken(b, genuine, 64<<10)},
		{"refused-1MiB", oversizedToken(b, genuine, 1<<20)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.tok)))
			for b.Loop() {
				if _, err := v.Verify(ctx, tc.tok); err == nil {
					b.Fatal("a forged token verified")
				}
			}
		})
	}
}
