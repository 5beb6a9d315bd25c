package eventstore_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/integrity"
)

// TestAWriteStoredLongAfterItWasMadeIsRefused: the captured bytes of a
// write that the stream never stored (a core subscriber sees every publish)
// keep an expectation that holds while nothing else is written there.
// Stored by someone else later than MaxStoreDelay after the ledger made it,
// headers and all, it is refused: the ledger had answered that it failed.
// Within the window it is what the ledger's own attempt with a lost
// acknowledgement would be, and is applied.
func TestAWriteStoredLongAfterItWasMadeIsRefused(t *testing.T) {
	st, js, _ := openTagged(t, eventstore.Config{Tags: recKeys})
	ctx := context.Background()
	// A rotation of session, made at made, expecting last, as the ledger
	// publishes it: a core subscriber captures it whole.
	captured := func(session string, made time.Time, last uint64) *nats.Msg {
		e := at(ev(ulid.MustNew(ulid.Timestamp(made), ulid.DefaultEntropy()).String(), session, domain.SessionRotated{Generation: 1}), last)
		data := encode(t, e)
		m := &nats.Msg{Subject: eventstore.SessionSubject(e), Data: data, Header: nats.Header{}}
		m.Header.Set(integrity.TagHeader, tagOf(recKeys, data))
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(last, 10))
		m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, eventstore.ExpectFilter(e))
		return m
	}
	store := func(m *nats.Msg) uint64 {
		t.Helper()
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("the stream refused the captured write: %v (the test needs it stored)", err)
		}
		return ack.Sequence
	}
	a, err := st.Append(ctx, at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Append(ctx, at(ev("E2", otherSid, domain.SessionIssued{UserID: "alice"}), 0))
	if err != nil {
		t.Fatal(err)
	}
	late := store(captured(sid, time.Now().Add(-eventstore.MaxStoreDelay-time.Minute), a))
	inTime := store(captured(otherSid, time.Now().Add(-time.Minute), b))
	recs := followRecords(t, st, 0, int(inTime))
	if r := recs[late-1]; r.Kind != domain.RecordRejected || !strings.Contains(r.Err.Error(), "gave up on") {
		t.Fatalf("the write stored %v after it was made: kind %d err %v, want refused", eventstore.MaxStoreDelay+time.Minute, r.Kind, r.Err)
	}
	if r := recs[inTime-1]; r.Kind != domain.RecordEvent {
		t.Fatalf("the write stored a minute after it was made: kind %d err %v, want the ledger's event", r.Kind, r.Err)
	}
}
