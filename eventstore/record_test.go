package eventstore_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/eventstore"
	"github.com/sessionledger/sessionledger/integrity"
	"github.com/sessionledger/sessionledger/internal/natstest"
	"github.com/sessionledger/sessionledger/internal/poll"
)

// The ledger's tag keys in these tests, another ledger's key under the same
// id, and a key under an id this ledger does not have.
var (
	recKeys      = tagKeysFor("t1", 4)
	otherKeys    = tagKeysFor("t1", 5)
	strangerKeys = tagKeysFor("t9", 4)
)

func tagKeysFor(id string, b byte) *integrity.TagKeys {
	k, err := integrity.NewTagKeys(id, map[string][]byte{id: bytes.Repeat([]byte{b}, 32)})
	if err != nil {
		panic(err)
	}
	return k
}

// openTagged opens the ledger's stream on a fresh in-process JetStream with
// cfg; it returns the store and a JetStream client that writes whatever it
// likes to the stream, as anyone with write access could.
func openTagged(t *testing.T, cfg eventstore.Config) (*eventstore.Store, jetstream.JetStream, *natstest.Server) {
	t.Helper()
	srv := natstest.Start(t, "")
	st, js := openOn(t, srv, cfg)
	return st, js, srv
}

func openOn(t *testing.T, srv *natstest.Server, cfg eventstore.Config) (*eventstore.Store, jetstream.JetStream) {
	t.Helper()
	nc := srv.Connect(t)
	st, err := eventstore.Open(context.Background(), nc, cfg)
	if err != nil {
		t.Fatalf("eventstore.Open: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return st, js
}

// openAgain is openOn for a stream that was just deleted. nats-server removes
// an account's empty stream directory after it answers the delete, and a
// create that races that removal fails with "could not create storage
// directory"; a deployment never re-creates its stream at once, so the test
// waits for the removal instead.
func openAgain(t *testing.T, srv *natstest.Server, cfg eventstore.Config) *eventstore.Store {
	t.Helper()
	nc := srv.Connect(t)
	var st *eventstore.Store
	poll.Until(t, 5*time.Second, func() (err error) {
		st, err = eventstore.Open(context.Background(), nc, cfg)
		return err
	})
	return st
}

// publishRaw stores data under subject with the tag header ("": none).
func publishRaw(t *testing.T, js jetstream.JetStream, subject string, data []byte, tag string) uint64 {
	t.Helper()
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if tag != "" {
		msg.Header.Set(integrity.TagHeader, tag)
	}
	ack, err := js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatalf("publish on %s: %v", subject, err)
	}
	return ack.Sequence
}

func encode(t *testing.T, e domain.Event) []byte {
	t.Helper()
	b, err := domain.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tagOf(k *integrity.TagKeys, data []byte) string { return k.Tag(sha256.Sum256(data)) }

// followRecords follows st from after until it has delivered n records,
// then stops it and returns them. It fails if Follow ends by itself.
func followRecords(t *testing.T, st *eventstore.Store, after uint64, n int) []domain.Record {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []domain.Record
	done := make(chan error, 1)
	go func() {
		done <- st.Follow(ctx, after, func(r domain.Record) error {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
			return nil
		})
	}()
	poll.Until(t, 10*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("Follow ended by itself: %v", err)
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		if len(got) < n {
			return fmt.Errorf("followed %d records, want %d", len(got), n)
		}
		return nil
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Follow ended with %v after its context was cancelled, want context.Canceled", err)
	}
	if len(got) != n {
		t.Fatalf("followed %d records, want %d", len(got), n)
	}
	return got
}

// followUntilError follows st from the start and returns the records it
// delivered and the error Follow ended with (within a few seconds).
func followUntilError(t *testing.T, st *eventstore.Store) ([]domain.Record, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []domain.Record
	err := st.Follow(ctx, 0, func(r domain.Record) error {
		got = append(got, r)
		return nil
	})
	if ctx.Err() != nil {
		t.Fatalf("Follow did not stop by itself: %v (after %d records)", err, len(got))
	}
	return got, err
}

const otherSid = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB"

// TestRecordsTellTheLedgersEventsFromOthers: what the ledger appended comes
// back as its events; every other message in the stream comes back as a
// refused record naming the user of its subject, and following goes on past
// it to the ledger's next event.
func TestRecordsTellTheLedgersEventsFromOthers(t *testing.T) {
	st, js, _ := openTagged(t, eventstore.Config{Tags: recKeys})
	ctx := context.Background()

	e1 := ev("E1", sid, domain.SessionIssued{UserID: "alice"})
	if seq, err := st.Append(ctx, at(e1, 0)); err != nil || seq != 1 {
		t.Fatalf("append E1: seq %d, %v", seq, err)
	}
	e1 = at(e1, 0)
	d1 := sha256.Sum256(encode(t, e1))
	// The ledger's next event of this session, written by someone else first.
	e2 := ev("E2", sid, domain.SessionRotated{Generation: 1})
	data2 := encode(t, at(e2, 1))
	subj2 := eventstore.SessionSubject(e2)
	otherUser := e2
	otherUser.UserKey = "uk2"

	type refused struct {
		name    string
		subject string
		data    []byte
		tag     string
		userKey string
		want    error  // the error the record's Err matches, if any
		says    string // what the record's Err says, if anything in particular
	}
	cases := []refused{
		{name: "no tag", subject: subj2, data: data2, userKey: "uk1", want: integrity.ErrNoTag},
		{name: "a genuine tag of another message", subject: subj2, data: data2, tag: tagOf(recKeys, encode(t, e1)), userKey: "uk1", want: integrity.ErrBadTag},
		{name: "a malformed tag", subject: subj2, data: data2, tag: "t1.not-a-mac", userKey: "uk1", want: integrity.ErrBadTag},
		{name: "a tag under another ledger's key", subject: subj2, data: data2, tag: tagOf(otherKeys, data2), userKey: "uk1", want: integrity.ErrBadTag},
		{name: "a tag under an unknown key id", subject: subj2, data: data2, tag: tagOf(strangerKeys, data2), userKey: "uk1", want: integrity.ErrUnknownKey},
		{name: "junk bytes, no tag", subject: "ledger.uk1." + sid + ".revoked", data: []byte("\x00\xffjunk{"), userKey: "uk1", want: integrity.ErrNoTag},
		{name: "junk bytes, a bad tag", subject: "ledger.uk1." + sid + ".revoked", data: []byte("junk"), tag: tagOf(otherKeys, []byte("junk")), userKey: "uk1", want: integrity.ErrBadTag},
		{name: "the event under another user's subject", subject: eventstore.SessionSubject(otherUser), data: data2, tag: tagOf(recKeys, data2), userKey: "uk2", says: "belongs under"},
		{name: "the event under another session's subject", subject: "ledger.uk1." + otherSid + ".rotated", data: data2, tag: tagOf(recKeys, data2), userKey: "uk1", says: "belongs under"},
		{name: "the event under another type's subject", subject: "ledger.uk1." + sid + ".revoked", data: data2, tag: tagOf(recKeys, data2), userKey: "uk1", says: "belongs under"},
		{name: "the event under a user-event subject", subject: "ledger.uk1.user.deactivated", data: data2, tag: tagOf(recKeys, data2), userKey: "uk1", says: "belongs under"},
		{name: "a subject naming no user", subject: "ledger.stray", data: data2, userKey: "", want: integrity.ErrNoTag},
		{name: "a subject naming no user, two levels", subject: "ledger.uk3.user", data: []byte("x"), userKey: "", want: integrity.ErrNoTag},
	}
	for i, c := range cases {
		if seq := publishRaw(t, js, c.subject, c.data, c.tag); seq != uint64(i+2) {
			t.Fatalf("%s stored at %d, want %d", c.name, seq, i+2)
		}
	}
	lastRefused := uint64(len(cases) + 1)

	// Those under the session's subjects count for its next append, and
	// the conflict says where the last of them is.
	last, err := st.LastUnder(ctx, eventstore.UserSessionFilter("uk1", sid))
	if err != nil || last != 11 {
		t.Fatalf("last under the session's subjects = %d, %v; want 11, the last refused message there", last, err)
	}
	var conflict *domain.ConflictError
	if _, err := st.Append(ctx, at(e2, 1)); !errors.As(err, &conflict) || conflict.Last != last {
		t.Fatalf("append expecting the session's last genuine event, with refused messages after it: %v, want a conflict at %d", err, last)
	}
	e2 = at(e2, last)
	data2 = encode(t, e2)
	seq2, err := st.Append(ctx, e2)
	if err != nil || seq2 != lastRefused+1 {
		t.Fatalf("append E2 after the refused messages: seq %d, %v; want %d", seq2, err, lastRefused+1)
	}

	recs := followRecords(t, st, 0, int(seq2))
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has sequence %d", i, r.Seq)
		}
	}
	checkEvent := func(r domain.Record, e domain.Event, digest [32]byte) {
		t.Helper()
		if r.Kind != domain.RecordEvent || r.Err != nil {
			t.Fatalf("seq %d: kind %d err %v, want the ledger's event %s", r.Seq, r.Kind, r.Err, e.ID)
		}
		if r.Event.ID != e.ID || r.Event.Seq != r.Seq || r.Event.Type() != e.Type() || r.Event.SessionID != e.SessionID || r.UserKey != e.UserKey {
			t.Fatalf("seq %d: event %+v (user %q), want %s", r.Seq, r.Event, r.UserKey, e.ID)
		}
		if r.Digest != digest || r.Event.Digest != digest {
			t.Fatalf("seq %d: digest %x / event digest %x, want SHA-256 of the stored bytes %x", r.Seq, r.Digest, r.Event.Digest, digest)
		}
	}
	checkEvent(recs[0], e1, d1)
	if recs[0].Event.Prev != nil {
		t.Fatalf("E1 has prev %x", recs[0].Event.Prev)
	}
	checkEvent(recs[seq2-1], e2, sha256.Sum256(data2))
	if x := recs[seq2-1].Event.Expect; x == nil || *x != last || recs[seq2-1].Event.Prev != nil {
		t.Fatalf("E2 expects %v (prev %x), want %d", x, recs[seq2-1].Event.Prev, last)
	}
	for i, c := range cases {
		r := recs[i+1]
		if r.Kind != domain.RecordRejected || r.Err == nil {
			t.Errorf("%s (seq %d): kind %d err %v, want refused", c.name, r.Seq, r.Kind, r.Err)
			continue
		}
		if r.UserKey != c.userKey {
			t.Errorf("%s (seq %d): user key %q, want %q from its subject %s", c.name, r.Seq, r.UserKey, c.userKey, c.subject)
		}
		if r.Digest != sha256.Sum256(c.data) {
			t.Errorf("%s (seq %d): digest is not the SHA-256 of the stored bytes", c.name, r.Seq)
		}
		if c.want != nil && !errors.Is(r.Err, c.want) {
			t.Errorf("%s (seq %d): err %v, want %v", c.name, r.Seq, r.Err, c.want)
		}
		if c.says != "" && !strings.Contains(r.Err.Error(), c.says) {
			t.Errorf("%s (seq %d): err %q, want it to say %q", c.name, r.Seq, r.Err, c.says)
		}
		if r.Event.ID != "" {
			t.Errorf("%s (seq %d): a refused record carries event %s", c.name, r.Seq, r.Event.ID)
		}
	}

	// Following from the middle starts right after it.
	if tail := followRecords(t, st, lastRefused-1, 2); tail[0].Seq != lastRefused || tail[0].Kind != domain.RecordRejected || tail[1].Kind != domain.RecordEvent {
		t.Fatalf("following from %d: %+v", lastRefused-1, tail)
	}
}

// TestHistoryLeavesOutRefusedMessages: a session's and a user's events are
// the ledger's only, even when a refused message is the last under the filter.
func TestHistoryLeavesOutRefusedMessages(t *testing.T) {
	st, js, _ := openTagged(t, eventstore.Config{Tags: recKeys})
	ctx := context.Background()
	appendNext := func(e domain.Event) uint64 {
		t.Helper()
		last, err := st.LastUnder(ctx, eventstore.ExpectFilter(e))
		if err != nil {
			t.Fatal(err)
		}
		seq, err := st.Append(ctx, at(e, last))
		if err != nil {
			t.Fatalf("append %s: %v", e.ID, err)
		}
		return seq
	}
	forged := func(e domain.Event, tag func([]byte) string) uint64 {
		t.Helper()
		data := encode(t, e)
		return publishRaw(t, js, eventstore.SessionSubject(e), data, tag(data))
	}
	none := func([]byte) string { return "" }
	foreign := func(d []byte) string { return tagOf(otherKeys, d) }

	appendNext(ev("E1", sid, domain.SessionIssued{UserID: "alice"}))
	forged(ev("F1", sid, domain.SessionRevoked{Reason: "forged"}), none)
	forged(ev("F2", "", domain.UserSessionsRevoked{UserID: "alice"}), foreign)
	appendNext(ev("E2", sid, domain.SessionRotated{Generation: 1}))
	appendNext(ev("E3", "", domain.UserReactivated{UserID: "alice"}))
	forged(ev("F3", sid, domain.SessionExpired{Reason: "forged"}), foreign)
	forged(ev("F4", "", domain.UserDeactivated{UserID: "alice"}), none)
	publishRaw(t, js, "ledger.uk1."+sid+".revoked", []byte("junk"), "")
	publishRaw(t, js, "ledger.uk1.user.deactivated", []byte("junk"), "")

	ids := func(es []domain.Event) string {
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s@%d", e.ID, e.Seq))
		}
		return strings.Join(out, " ")
	}
	for _, userKey := range []string{"", "uk1"} {
		own, err := st.SessionEvents(ctx, userKey, sid)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(own); got != "E1@1 E2@4" {
			t.Fatalf("SessionEvents(%q) = %s, want E1@1 E2@4", userKey, got)
		}
	}
	user, err := st.UserEvents(ctx, "uk1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(user); got != "E3@5" {
		t.Fatalf("UserEvents = %s, want E3@5", got)
	}
	if after, err := st.UserEvents(ctx, "uk1", 5); err != nil || len(after) != 0 {
		t.Fatalf("UserEvents after the last genuine one = %s, %v; want none", ids(after), err)
	}
	// A session only forged messages name has no history.
	forged(ev("F5", otherSid, domain.SessionIssued{UserID: "mallory"}), none)
	if got, err := st.SessionEvents(ctx, "", otherSid); err != nil || len(got) != 0 {
		t.Fatalf("SessionEvents of a forged session = %s, %v; want none", ids(got), err)
	}
}

// TestTaggedUndecodableStopsFollow: only a message the ledger tagged that
// this version cannot decode stops Follow (a newer ledger wrote it).
func TestTaggedUndecodableStopsFollow(t *testing.T) {
	newer := []byte(`{"specversion":"1.0","id":"X","type":"session.teleported","source":"urn:sessionledger","subject":"` + sid + `","time":"2026-01-01T00:00:00Z","schemaversion":1,"userkey":"uk1","data":{}}`)
	newRevision := encode(t, ev("X", sid, domain.SessionRevoked{Reason: "x"}))
	newRevision = bytes.Replace(newRevision, []byte(`"schemaversion":2`), []byte(`"schemaversion":3`), 1)
	for _, tc := range []struct {
		name, subject string
		data          []byte
	}{
		{"unknown event type", "ledger.uk1." + sid + ".teleported", newer},
		{"newer revision of a known type", "ledger.uk1." + sid + ".revoked", newRevision},
		{"not JSON", "ledger.uk1." + sid + ".revoked", []byte("\x00\x01binary")},
		{"checkpoint of another format", integrity.CheckpointSubject, []byte(`{"format":2}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, js, _ := openTagged(t, eventstore.Config{Tags: recKeys})
			ctx := context.Background()
			if _, err := st.Append(ctx, at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 0)); err != nil {
				t.Fatal(err)
			}
			junk := publishRaw(t, js, tc.subject, tc.data, tagOf(recKeys, tc.data))
			// The ledger's next event, after the junk.
			if _, err := st.Append(ctx, at(ev("E2", otherSid, domain.SessionIssued{UserID: "alice"}), 0)); err != nil {
				t.Fatal(err)
			}
			got, err := followUntilError(t, st)
			if !errors.Is(err, domain.ErrUndecodable) || !errors.Is(err, eventstore.ErrUndecodable) {
				t.Fatalf("Follow ended with %v, want an error matching ErrUndecodable", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("sequence %d", junk)) {
				t.Errorf("the error does not name sequence %d: %v", junk, err)
			}
			if len(got) != 1 || got[0].Kind != domain.RecordEvent || got[0].Seq != 1 {
				t.Fatalf("records before the stop: %+v, want only the event at 1", got)
			}
		})
	}
	// The same messages with a bad tag, or none, are refused and skipped.
	st, js, _ := openTagged(t, eventstore.Config{Tags: recKeys})
	publishRaw(t, js, "ledger.uk1."+sid+".teleported", newer, "")
	publishRaw(t, js, "ledger.uk1."+sid+".revoked", newRevision, tagOf(otherKeys, newRevision))
	publishRaw(t, js, integrity.CheckpointSubject, []byte(`{"format":2}`), "")
	publishRaw(t, js, integrity.CheckpointSubject, []byte(`{"format":2}`), tagOf(strangerKeys, []byte(`{"format":2}`)))
	if _, err := st.Append(context.Background(), at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 2)); err != nil {
		t.Fatal(err)
	}
	recs := followRecords(t, st, 0, 5)
	for _, r := range recs[:4] {
		if r.Kind != domain.RecordRejected {
			t.Errorf("seq %d: kind %d (%v), want refused", r.Seq, r.Kind, r.Err)
		}
	}
	if recs[4].Kind != domain.RecordEvent {
		t.Fatalf("seq 5: kind %d, want the ledger's event", recs[4].Kind)
	}
}

// TestTrustUntaggedThrough: untagged messages up to the configured sequence
// (history written before tags) are the ledger's; later ones are not.
func TestTrustUntaggedThrough(t *testing.T) {
	srv := natstest.Start(t, "")
	_, js := openOn(t, srv, eventstore.Config{}) // a ledger from before tags
	old1 := ev("O1", sid, domain.SessionIssued{UserID: "alice"})
	old2 := ev("O2", otherSid, domain.SessionIssued{UserID: "alice"})
	late := ev("O3", sid, domain.SessionRevoked{Reason: "after the trusted range"})
	misplaced := old1
	misplaced.UserKey = "uk2"
	publishRaw(t, js, eventstore.SessionSubject(old1), encode(t, old1), "")             // 1
	publishRaw(t, js, eventstore.SessionSubject(misplaced), encode(t, old1), "")        // 2: wrong subject
	publishRaw(t, js, eventstore.SessionSubject(old2), encode(t, old2), "")             // 3: the last trusted
	publishRaw(t, js, eventstore.SessionSubject(late), encode(t, late), "")             // 4: untagged, too late
	publishRaw(t, js, eventstore.SessionSubject(late), encode(t, late), "t1.forged---") // 5: a bad tag

	trusting, _ := openOn(t, srv, eventstore.Config{Tags: recKeys, TrustUntaggedThrough: 3})
	if _, err := trusting.Append(context.Background(), at(ev("N1", sid, domain.SessionRotated{Generation: 1}), 5)); err != nil {
		t.Fatal(err) // 6: tagged
	}
	recs := followRecords(t, trusting, 0, 6)
	want := []domain.RecordKind{domain.RecordEvent, domain.RecordRejected, domain.RecordEvent, domain.RecordRejected, domain.RecordRejected, domain.RecordEvent}
	for i, r := range recs {
		if r.Kind != want[i] {
			t.Errorf("trusting through 3: seq %d kind %d (%v), want %d", r.Seq, r.Kind, r.Err, want[i])
		}
	}
	if !errors.Is(recs[3].Err, integrity.ErrNoTag) {
		t.Errorf("untagged at 4, past the trusted range: %v, want ErrNoTag", recs[3].Err)
	}
	if !errors.Is(recs[4].Err, integrity.ErrBadTag) {
		t.Errorf("badly tagged at 5: %v, want ErrBadTag", recs[4].Err)
	}
	if recs[0].Event.ID != "O1" || recs[2].Event.ID != "O2" || recs[5].Event.ID != "N1" {
		t.Errorf("events %s %s %s", recs[0].Event.ID, recs[2].Event.ID, recs[5].Event.ID)
	}
	if own, err := trusting.SessionEvents(context.Background(), "", sid); err != nil || len(own) != 2 || own[0].ID != "O1" || own[1].ID != "N1" {
		t.Errorf("SessionEvents with trusted history: %+v, %v", own, err)
	}

	// The same stream read without the trust: nothing untagged is the ledger's.
	strict, _ := openOn(t, srv, eventstore.Config{Tags: recKeys})
	for _, r := range followRecords(t, strict, 0, 6)[:5] {
		if r.Kind != domain.RecordRejected {
			t.Errorf("without trust: seq %d kind %d, want refused", r.Seq, r.Kind)
		}
	}
	// Trusting through 2 leaves 3 out.
	two, _ := openOn(t, srv, eventstore.Config{Tags: recKeys, TrustUntaggedThrough: 2})
	if r := followRecords(t, two, 2, 4)[0]; r.Seq != 3 || r.Kind != domain.RecordRejected || !errors.Is(r.Err, integrity.ErrNoTag) {
		t.Errorf("trusting through 2, seq 3: %+v", r)
	}
}

// TestCheckpointRecords: a checkpoint is stored once per covered sequence,
// however many instances write it, and reads back as a checkpoint record.
func TestCheckpointRecords(t *testing.T) {
	st, js, _ := openTagged(t, eventstore.Config{Tags: recKeys})
	ctx := context.Background()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	ck := integrity.CheckpointKey{ID: "c1", Private: priv}
	trusted := integrity.PublicKeys{"c1": priv.Public().(ed25519.PublicKey)}
	sign := func(from, covers uint64, at time.Time) *integrity.Checkpoint {
		c := &integrity.Checkpoint{From: from, Covers: covers, Chain: integrity.Chain{byte(covers)}, Rejected: []uint64{covers}, Time: at}
		ck.Sign(c)
		return c
	}
	e1 := ev("E1", sid, domain.SessionIssued{UserID: "alice"})
	if _, err := st.Append(ctx, at(e1, 0)); err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, "ledger.uk1."+sid+".revoked", []byte("junk"), "") // 2
	c2 := sign(0, 2, t0)
	seq, err := st.AppendCheckpoint(ctx, c2)
	if err != nil || seq != 3 {
		t.Fatalf("AppendCheckpoint: seq %d, %v; want 3", seq, err)
	}
	// Another instance checkpoints the same sequence a moment later.
	if again, err := st.AppendCheckpoint(ctx, sign(0, 2, t0.Add(time.Second))); err != nil || again != 3 {
		t.Fatalf("second checkpoint of sequence 2: seq %d, %v; want 3 (stored once)", again, err)
	}
	if last, _ := st.LastSeq(ctx); last != 3 {
		t.Fatalf("stream ends at %d after two checkpoints of one sequence, want 3", last)
	}
	// Forged checkpoints: untagged, and tagged under another ledger's key.
	forgedData, _ := sign(3, 4, t0).Encode()
	publishRaw(t, js, integrity.CheckpointSubject, forgedData, "")                           // 4
	publishRaw(t, js, integrity.CheckpointSubject, forgedData, tagOf(otherKeys, forgedData)) // 5
	if _, err := st.Append(ctx, at(ev("E2", sid, domain.SessionRotated{Generation: 1}), 2)); err != nil {
		t.Fatal(err) // 6
	}
	c6 := sign(2, 6, t0.Add(time.Minute))
	if seq, err := st.AppendCheckpoint(ctx, c6); err != nil || seq != 7 {
		t.Fatalf("checkpoint of 6: seq %d, %v; want 7", seq, err)
	}

	recs := followRecords(t, st, 0, 7)
	s, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		seq    uint64
		covers uint64
	}{{3, 2}, {7, 6}} {
		r := recs[c.seq-1]
		if r.Kind != domain.RecordCheckpoint || r.Covers != c.covers || r.UserKey != "" || r.Err != nil {
			t.Fatalf("seq %d: kind %d covers %d user %q err %v; want a checkpoint covering %d", r.Seq, r.Kind, r.Covers, r.UserKey, r.Err, c.covers)
		}
		m, err := s.GetMsg(ctx, c.seq)
		if err != nil {
			t.Fatal(err)
		}
		if r.Digest != sha256.Sum256(m.Data) {
			t.Errorf("seq %d: digest is not the SHA-256 of the stored checkpoint", c.seq)
		}
		if m.Subject != integrity.CheckpointSubject {
			t.Errorf("seq %d stored under %s", c.seq, m.Subject)
		}
		stored, err := integrity.DecodeCheckpoint(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if err := trusted.Verify(&stored); err != nil {
			t.Errorf("seq %d: the stored checkpoint does not verify: %v", c.seq, err)
		}
	}
	if first, _ := s.GetMsg(ctx, 3); !strings.Contains(string(first.Data), t0.Format(time.RFC3339)) {
		t.Errorf("the stored checkpoint of sequence 2 is not the first one written: %s", first.Data)
	}
	for _, seq := range []uint64{4, 5} {
		if r := recs[seq-1]; r.Kind != domain.RecordRejected || r.UserKey != "" {
			t.Errorf("forged checkpoint at %d: kind %d user %q (%v), want refused naming no user", seq, r.Kind, r.UserKey, r.Err)
		}
	}
	if r := recs[5]; r.Kind != domain.RecordEvent || r.Event.ID != "E2" {
		t.Fatalf("seq 6: %+v, want E2", r)
	}
}

// TestCheckDetectsLostHistory: Check is nil for the stream the store opened
// while it holds what was applied, and ErrHistoryLost when the stream was
// deleted, replaced, or ends before what was applied.
func TestCheckDetectsLostHistory(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) (*eventstore.Store, jetstream.JetStream, *natstest.Server) {
		st, js, srv := openTagged(t, eventstore.Config{Tags: recKeys})
		for i, e := range []domain.Event{ev("E1", sid, domain.SessionIssued{UserID: "alice"}), ev("E2", sid, domain.SessionRotated{Generation: 1})} {
			if _, err := st.Append(ctx, at(e, uint64(i))); err != nil {
				t.Fatal(err)
			}
		}
		return st, js, srv
	}
	t.Run("intact", func(t *testing.T) {
		st, _, _ := setup(t)
		for _, applied := range []uint64{0, 1, 2} {
			if err := st.Check(ctx, applied); err != nil {
				t.Fatalf("Check(%d) on an intact stream: %v", applied, err)
			}
		}
		err := st.Check(ctx, 3)
		if !errors.Is(err, domain.ErrHistoryLost) || !strings.Contains(err.Error(), "ends at sequence 2") {
			t.Fatalf("Check(3) on a stream ending at 2: %v, want ErrHistoryLost", err)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		st, js, srv := setup(t)
		if err := js.DeleteStream(ctx, eventstore.StreamName); err != nil {
			t.Fatal(err)
		}
		if err := st.Check(ctx, 2); !errors.Is(err, domain.ErrHistoryLost) || !strings.Contains(err.Error(), "deleted") {
			t.Fatalf("Check after the stream was deleted: %v, want ErrHistoryLost", err)
		}
		if err := st.Check(ctx, 0); !errors.Is(err, domain.ErrHistoryLost) {
			t.Fatalf("Check(0) after the stream was deleted: %v, want ErrHistoryLost", err)
		}
		// An instance that knows the stream existed refuses to create it again.
		if _, err := eventstore.Open(ctx, srv.Connect(t), eventstore.Config{Tags: recKeys, MustExist: true}); !errors.Is(err, domain.ErrHistoryLost) {
			t.Fatalf("Open with MustExist on a deleted stream: %v, want ErrHistoryLost", err)
		}
	})
	t.Run("replaced by a shorter one", func(t *testing.T) {
		st, js, srv := setup(t)
		if err := js.DeleteStream(ctx, eventstore.StreamName); err != nil {
			t.Fatal(err)
		}
		again := openAgain(t, srv, eventstore.Config{Tags: recKeys})
		if _, err := again.Append(ctx, at(ev("R0", sid, domain.SessionIssued{UserID: "mallory"}), 0)); err != nil {
			t.Fatal(err)
		}
		if err := st.Check(ctx, 2); !errors.Is(err, domain.ErrHistoryLost) {
			t.Fatalf("Check on a stream created again with fewer messages: %v, want ErrHistoryLost", err)
		}
	})
	t.Run("replaced", func(t *testing.T) {
		st, js, srv := setup(t)
		if err := js.DeleteStream(ctx, eventstore.StreamName); err != nil {
			t.Fatal(err)
		}
		// Someone creates it again and fills it past what was applied.
		again := openAgain(t, srv, eventstore.Config{Tags: recKeys})
		for i := range 3 {
			if _, err := again.Append(ctx, at(ev(fmt.Sprintf("R%d", i), sid, domain.SessionIssued{UserID: "mallory"}), uint64(i))); err != nil {
				t.Fatal(err)
			}
		}
		err := st.Check(ctx, 2)
		if !errors.Is(err, domain.ErrHistoryLost) || !strings.Contains(err.Error(), "replaced") {
			t.Fatalf("Check on a stream deleted and created again: %v, want ErrHistoryLost", err)
		}
		if err := again.Check(ctx, 3); err != nil {
			t.Fatalf("the store that opened the new stream: %v", err)
		}
	})
}

// TestReplayedEventIsRefused: a genuine event, tag and all, stored again by
// someone with write access is never applied. With the expectation it was
// written under, the stream refuses it (the expectation no longer holds);
// without it, or with another one, readers refuse it, since the
// expectation is in the tagged event and must match the headers the stream
// enforced. This is what the user's hash chain did before per-session
// concurrency.
func TestReplayedEventIsRefused(t *testing.T) {
	st, js, _ := openTagged(t, eventstore.Config{Tags: recKeys})
	ctx := context.Background()
	issued := at(ev("E1", sid, domain.SessionIssued{UserID: "alice"}), 0)
	if _, err := st.Append(ctx, issued); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(ctx, at(ev("E2", sid, domain.SessionRevoked{Reason: "x"}), 1)); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := stored.Header.Get(jetstream.ExpectedLastSubjSeqHeader); got != "0" {
		t.Fatalf("the stored issue carries expected last subject sequence %q, want 0: the stream keeps the headers it enforced", got)
	}
	replay := func(h nats.Header) (uint64, error) {
		msg := &nats.Msg{Subject: stored.Subject, Data: stored.Data, Header: nats.Header{}}
		msg.Header.Set(integrity.TagHeader, stored.Header.Get(integrity.TagHeader))
		for k, v := range h {
			msg.Header[k] = v
		}
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			return 0, err
		}
		return ack.Sequence, nil
	}
	// As written: the stream refuses it, since the session has events now.
	if seq, err := replay(nats.Header{
		jetstream.ExpectedLastSubjSeqHeader:     {"0"},
		jetstream.ExpectedLastSubjSeqSubjHeader: {eventstore.UserSessionFilter("uk1", sid)},
	}); err == nil {
		t.Fatalf("the stream stored a replay under its original expectation at %d", seq)
	}
	// Without the expectation, or with one that holds now: stored, refused.
	bare, err := replay(nil)
	if err != nil {
		t.Fatal(err)
	}
	rewritten, err := replay(nats.Header{
		jetstream.ExpectedLastSubjSeqHeader:     {strconv.FormatUint(bare, 10)},
		jetstream.ExpectedLastSubjSeqSubjHeader: {eventstore.UserSessionFilter("uk1", sid)},
	})
	if err != nil {
		t.Fatal(err)
	}
	recs := followRecords(t, st, 0, int(rewritten))
	for _, seq := range []uint64{bare, rewritten} {
		r := recs[seq-1]
		if r.Kind != domain.RecordRejected || !strings.Contains(fmt.Sprint(r.Err), "expectation") {
			t.Errorf("replay at %d: kind %d err %v, want refused for its expectation", seq, r.Kind, r.Err)
		}
	}
	if recs[0].Kind != domain.RecordEvent || recs[1].Kind != domain.RecordEvent {
		t.Fatalf("the genuine events: %+v", recs[:2])
	}
}
