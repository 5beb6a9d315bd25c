package ledger_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/audit"
	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/ledgertest"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/ledger"
)

// rawPublish stores data on subject with the header block hdr, written by
// hand on a plain NATS connection: what nats.go would never send.
func rawPublish(t *testing.T, clientURL, subject, hdr string, data []byte) {
	t.Helper()
	u, _ := url.Parse(clientURL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\n")
	fmt.Fprintf(c, "HPUB %s %d %d\r\n%s%s\r\nPING\r\n", subject, len(hdr), len(hdr)+len(data), hdr, data)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "-ERR") {
			t.Fatal(l)
		}
		if strings.HasPrefix(l, "PONG") {
			return
		}
	}
}

// TestCopiesWithHeadersTheServerDoesNotReadChangeNothing: someone with
// write access to the stream (no tag key) stores copies of a revoked
// session's issue and rotation and of a user's deactivation, with the
// expectation headers separated by a bare LF: nats-server does not see
// them, so it enforces nothing, while nats.go reads them as the originals
// had them. The projection decides by where each copy is stored, so none
// takes effect, and `audit verify` names them.
func TestCopiesWithHeadersTheServerDoesNotReadChangeNothing(t *testing.T) {
	srv, _, a := setup(t, time.Minute)
	ctx := context.Background()
	p0, err := a.Issue(ctx, ledger.IssueRequest{UserID: "victim"})
	if err != nil {
		t.Fatal(err)
	}
	p1, err := a.Refresh(ctx, p0.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeSession(ctx, p1.SessionID); err != nil {
		t.Fatal(err)
	}
	if err := a.Deactivate(ctx, "dora"); err != nil {
		t.Fatal(err)
	}
	if err := a.Reactivate(ctx, "dora"); err != nil {
		t.Fatal(err)
	}
	dora, err := a.Issue(ctx, ledger.IssueRequest{UserID: "dora"})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(srv.Connect(t))
	s, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	last, _ := a.Store.LastSeq(ctx)
	copies := []uint64{1, 2, 4} // the issue, the rotation, dora's deactivation
	for _, seq := range copies {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		hdr := "NATS/1.0\r\n" + integrity.TagHeader + ": " + m.Header.Get(integrity.TagHeader) +
			"\n" + jetstream.ExpectedLastSubjSeqHeader + ": " + m.Header.Get(jetstream.ExpectedLastSubjSeqHeader) +
			"\n" + jetstream.ExpectedLastSubjSeqSubjHeader + ": " + m.Header.Get(jetstream.ExpectedLastSubjSeqSubjHeader) + "\r\n\r\n"
		rawPublish(t, srv.ClientURL(), m.Subject, hdr, m.Data)
	}
	// PONG answers the publish, not the stream's store, which takes the
	// copies in on its own goroutine: wait for them.
	poll.Until(t, 5*time.Second, func() error {
		if now, _ := a.Store.LastSeq(ctx); now != last+uint64(len(copies)) {
			return fmt.Errorf("the server stored %d of the %d copies: the test needs them stored", now-last, len(copies))
		}
		return nil
	})
	if err := a.Proj.WaitApplied(ctx, last+uint64(len(copies))); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Proj.Session(p1.SessionID); ok {
		t.Fatal("the revoked session is held again")
	}
	if _, err := a.Refresh(ctx, p1.RefreshToken); err == nil {
		t.Fatal("the revoked session's token refreshes after the copies")
	}
	if _, err := a.Refresh(ctx, dora.RefreshToken); err != nil {
		t.Fatalf("a copy of dora's old deactivation took effect: %v", err)
	}
	if n := a.Proj.Refused() + a.Proj.Superseded(); n != uint64(len(copies)) {
		t.Fatalf("refused %d and superseded %d of %d copies", a.Proj.Refused(), a.Proj.Superseded(), len(copies))
	}
	v := audit.NewVerifier(eventstore.SessionSubject, nil)
	end, _ := a.Store.LastSeq(ctx)
	for seq := uint64(1); seq <= end; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		v.Add(audit.Record{Seq: seq, Subject: m.Subject, Data: m.Data})
	}
	named := map[uint64]bool{}
	for _, p := range v.Problems() {
		if p.Kind == "position" {
			named[p.Seq] = true
		}
	}
	for i := range copies {
		if !named[last+uint64(i)+1] {
			t.Errorf("audit verify does not name the copy at %d: %v", last+uint64(i)+1, v.Problems())
		}
	}
}

// squattingStore plays someone with write access to the stream who saw a
// write's Nats-Msg-Id (a core subscriber sees every publish, and a publish
// whose ack was lost is retried with the same id) and stored junk under it
// first: the next times times.
type squattingStore struct {
	*eventstore.Store
	js    jetstream.JetStream
	times *atomic.Int64
}

func (s squattingStore) Append(ctx context.Context, e domain.Event) (uint64, error) {
	if e.Type() == domain.TypeUserSessionsRevoked && s.times.Add(-1) >= 0 {
		m := &nats.Msg{Subject: "ledger." + e.UserKey + ".user.junk", Data: []byte("junk"), Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, e.ID)
		if _, err := s.js.PublishMsg(ctx, m); err != nil {
			return 0, err
		}
	}
	return s.Store.Append(ctx, e)
}

// TestAWriteIsNeverReportedByItsIDAlone: a message stored under the id of
// the ledger's write is not taken for it (the stream's duplicate ack, or
// the last message under the expectation, is compared byte for byte): the
// write is decided again under a new id and recorded; against someone who
// takes every id first, it fails instead of reporting success.
func TestAWriteIsNeverReportedByItsIDAlone(t *testing.T) {
	srv, clk, a := setup(t, time.Minute)
	ctx := context.Background()
	js, _ := jetstream.New(srv.Connect(t))
	var times atomic.Int64
	l := ledger.New(squattingStore{a.Store, js, &times}, a.Proj, a.Signer, ledgertest.Keys, ledger.Config{Now: clk.Now, ReuseGrace: time.Minute})
	p, err := l.Issue(ctx, ledger.IssueRequest{UserID: "victim"})
	if err != nil {
		t.Fatal(err)
	}
	times.Store(1)
	if err := l.RevokeUser(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Refresh(ctx, p.RefreshToken); err == nil {
		t.Fatal("RevokeUser returned, but the session still refreshes")
	}
	p, err = l.Issue(ctx, ledger.IssueRequest{UserID: "victim"})
	if err != nil {
		t.Fatal(err)
	}
	times.Store(1 << 20)
	if err := l.RevokeUser(ctx, "victim"); !errors.Is(err, domain.ErrConflict) && !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("RevokeUser against someone taking every id: %v, want a failure", err)
	}
	if _, err := l.Refresh(ctx, p.RefreshToken); err != nil {
		t.Fatalf("nothing was revoked, and nothing was said to be: %v", err)
	}
}
