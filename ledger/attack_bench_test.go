package ledger_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/ledger"
)

// BenchmarkRefusal is what a refresh with a token the ledger never issued
// costs, next to a genuine refresh in the same run (the reference): an
// unknown session, generation 0 of a session at generation 2,000, and
// garbage of the right shape, among users other sessions. Run with
// -benchtime=2000x at most for the refresh (each appends).
func BenchmarkRefusal(b *testing.B) {
	srv := natstest.Start(b, "")
	l := ledgertest.New(b, srv, "https://ledger.test", "api", ledger.Config{})
	ctx := context.Background()
	for i := range 1000 {
		if _, err := l.Issue(ctx, ledger.IssueRequest{UserID: fmt.Sprint("user-", i)}); err != nil {
			b.Fatal(err)
		}
	}
	p, err := l.Issue(ctx, ledger.IssueRequest{UserID: "mallory"})
	if err != nil {
		b.Fatal(err)
	}
	rt := p.RefreshToken
	for range 2000 {
		if p, err = l.Refresh(ctx, rt); err != nil {
			b.Fatal(err)
		}
		rt = p.RefreshToken
	}
	tok, _ := domain.ParseRefreshToken(rt)
	unknown := tok
	unknown.SessionID = ulid.Make().String()
	old := tok
	old.Generation, old.Secret[0] = 0, old.Secret[0]^1
	garbage := tok
	garbage.Tag[0] ^= 1
	for name, forged := range map[string]string{"unknown session": unknown.Encode(), "generation 0": old.Encode(), "bad tag": garbage.Encode()} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.Refresh(ctx, forged); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
	b.Run("refresh (reference)", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p, err := l.Refresh(ctx, rt)
			if err != nil {
				b.Fatal(err)
			}
			rt = p.RefreshToken
		}
	})
}
