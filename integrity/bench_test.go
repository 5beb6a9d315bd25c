package integrity_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/sessionledger/sessionledger/integrity"
)

// BenchmarkTagCheck is what every message read by a projection pays for its
// tag; BenchmarkChainNext what it pays for the running hash. The reference
// is the SHA-256 of a typical 500-byte event, which every read computed
// before tags (the chain digest).
func BenchmarkTagCheck(b *testing.B) {
	k, err := integrity.NewTagKeys("t1", map[string][]byte{"t1": bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		b.Fatal(err)
	}
	c := k.Checker()
	d := sha256.Sum256([]byte("x"))
	tag := k.Tag(d)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := c.Check(tag, d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChainNext(b *testing.B) {
	var c integrity.Chain
	d := sha256.Sum256([]byte("x"))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c = c.Next(uint64(i), d)
	}
}

func BenchmarkReferenceSHA256Of500Bytes(b *testing.B) {
	data := bytes.Repeat([]byte{'x'}, 500)
	for i := 0; i < b.N; i++ {
		sha256.Sum256(data)
	}
}
