package verifier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/internal/poll"
	"github.com/sessionledger/sessionledger/verifier"
)

// publishJunk stores data on subject, as anyone with write access to the
// stream could, and returns its sequence.
func (e *env) publishJunk(subject string, data []byte) uint64 {
	e.t.Helper()
	js, err := jetstream.New(e.srv.Connect(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: data})
	if err != nil {
		e.t.Fatalf("publish on %s: %v", subject, err)
	}
	return ack.Sequence
}

// undecodable is a revocation a newer ledger might write: a known type at a
// revision this version does not read.
func undecodable(t *testing.T) []byte {
	t.Helper()
	b, err := domain.EncodeEvent(domain.Event{ID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PZ", Time: time.Now(), SessionID: "01JD3Z9V6Q4Q4WJ5X7K8M9N0PZ", UserKey: "x", Data: domain.SessionRevoked{Reason: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	newer := bytes.Replace(b, fmt.Appendf(nil, `"schemaversion":%d`, domain.Revision(domain.TypeSessionRevoked)), []byte(`"schemaversion":99`), 1)
	if bytes.Equal(newer, b) {
		t.Fatalf("no schemaversion in %s", b)
	}
	if _, err := domain.DecodeEvent(newer); err == nil {
		t.Fatal("the newer revision decodes")
	}
	return newer
}

// checkSkipped waits until v has skipped n messages, and checks what Health
// says of them.
func checkSkipped(t *testing.T, v *verifier.Verifier, n int, lastSeq uint64) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		if got := v.Skipped(); got != uint64(n) {
			return fmt.Errorf("Skipped() = %d, want %d", got, n)
		}
		return nil
	})
	err := v.Health()
	if !errors.Is(err, verifier.ErrSkippedMessages) {
		t.Fatalf("Health() = %v, want an error matching ErrSkippedMessages", err)
	}
	for _, want := range []string{fmt.Sprintf("%d, the last at sequence %d", n, lastSeq), "undecodable"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Health() = %q, want it to say %q", err, want)
		}
	}
}

// TestJunkOnRevocationSubjectsIsSkipped: messages on the revocation
// subjects that do not decode (junk, or a newer ledger's events) are
// skipped and reported by Health, while Verify goes on accepting live
// sessions' tokens (even failing closed) and revocations recorded after them
// still apply.
func TestJunkOnRevocationSubjectsIsSkipped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	live := e.issue("alice")
	victim := e.issue("bob")
	deactivated := e.issue("carol")
	v := e.verifier(verifier.Config{FailClosed: true})
	if err := v.Health(); err != nil || v.Skipped() != 0 {
		t.Fatalf("before any junk: Health() = %v, Skipped() = %d", err, v.Skipped())
	}

	e.publishJunk("ledger.x.y.revoked", []byte("\x00\xffnot an event"))
	e.publishJunk("ledger.x.y.expired", []byte(`{"specversion":"1.0"}`))
	last := e.publishJunk("ledger.x.y.revoked", undecodable(t))
	checkSkipped(t, v, 3, last)

	// Verify accepts a live session's token: skipped messages alone do not
	// make it fail closed.
	if c, err := v.Verify(ctx, live.AccessToken); err != nil || c.SessionID != live.SessionID {
		t.Fatalf("Verify of a live session's token after junk, failing closed: %+v, %v", c, err)
	}
	// Revocations recorded after the junk are applied.
	if err := e.ledger.RevokeSession(ctx, victim.SessionID); err != nil {
		t.Fatal(err)
	}
	eventuallyRevoked(t, v, victim.AccessToken)
	if err := e.ledger.Deactivate(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	eventuallyRevoked(t, v, deactivated.AccessToken)
	if _, err := v.Verify(ctx, live.AccessToken); err != nil {
		t.Fatalf("the live session's token after the revocations: %v", err)
	}
	// Junk on a user-event revocation subject too, after the revocations.
	last = e.publishJunk("ledger.x.user.deactivated", []byte("junk"))
	checkSkipped(t, v, 4, last)
	if _, err := v.Verify(ctx, victim.AccessToken); !errors.Is(err, verifier.ErrRevoked) {
		t.Fatalf("the revoked session's token after more junk: %v, want ErrRevoked", err)
	}

	// A verifier started now replays the junk and the revocations alike.
	late := e.verifier(verifier.Config{FailClosed: true})
	checkSkipped(t, late, 4, last)
	if _, err := late.Verify(ctx, live.AccessToken); err != nil {
		t.Fatalf("a verifier started after the junk refuses a live session's token: %v", err)
	}
	for _, tok := range []string{victim.AccessToken, deactivated.AccessToken} {
		if _, err := late.Verify(ctx, tok); !errors.Is(err, verifier.ErrRevoked) {
			t.Fatalf("a verifier started after the junk: revoked session's token %v, want ErrRevoked", err)
		}
	}
	// The ledger itself went on past the junk.
	if _, err := e.ledger.Refresh(ctx, live.RefreshToken); err != nil {
		t.Fatalf("the ledger after junk in its stream: %v", err)
	}
}
