package accesstoken

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

// stuffedToken returns a forged token of about size bytes: s's header, a
// payload of valid JSON claims padded with small members, and a signature of
// zeros.
func stuffedToken(tb testing.TB, s *Signer, size int) string {
	tb.Helper()
	enc := base64.RawURLEncoding
	header := s.Active().header
	sig := enc.EncodeToString(make([]byte, ed25519.SignatureSize))
	room := enc.DecodedLen(size - len(header) - len(sig) - 2)
	var b strings.Builder
	fmt.Fprintf(&b, `{"iss":"https://ledger.example","aud":"api","sub":"mallory","sid":"S1","iat":%d,"exp":%d`, now.Unix(), now.Add(time.Hour).Unix())
	for i := 0; b.Len() < room-16; i++ {
		fmt.Fprintf(&b, `,"f%08d":0`, i)
	}
	b.WriteByte('}')
	tok := header + "." + enc.EncodeToString([]byte(b.String())) + "." + sig
	if len(tok) > size || len(tok) < size-32 {
		tb.Fatalf("stuffed token of %d bytes, want about %d", len(tok), size)
	}
	return tok
}

// BenchmarkVerify measures Signer.Verify (the ledger's path, Parse) on a
// genuine token and on tokens it refuses: a forged signature of normal size
// and forged tokens of 64 KiB and 1 MiB stuffed with claims.
func BenchmarkVerify(b *testing.B) {
	s, _ := newSigner(b)
	genuine, err := s.Sign(claims())
	if err != nil {
		b.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	signing := genuine[:strings.LastIndexByte(genuine, '.')]
	forged := signing + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(other, []byte(signing)))
	b.Run("genuine", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Verify(genuine, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, tc := range []struct {
		name string
		tok  string
	}{
		{"refused-forged-signature", forged},
		{"refused-64KiB", stuffedToken(b, s, 64<<10)},
		{"refused-1MiB", stuffedToken(b, s, 1<<20)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.tok)))
			for b.Loop() {
				if _, err := s.Verify(tc.tok, now); err == nil {
					b.Fatal("a forged token verified")
				}
			}
		})
	}
}
