package projections

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

// stream writes records as the stream would hold them and applies each to
// a live projection as it goes; it remembers the records and which of them
// the live projection refused.
type stream struct {
	t       *testing.T
	p       *Sessions
	recs    []domain.Record
	refused []uint64 // sequences the live projection refused
}

func newStream(t *testing.T) *stream { return &stream{t: t, p: NewSessions(nil)} }

func (s *stream) next() uint64 { return uint64(len(s.recs)) + 1 }

// add applies r at the next sequence and notes whether it was refused.
func (s *stream) add(r domain.Record) domain.Record {
	s.t.Helper()
	r.Seq = s.next()
	if r.Kind == domain.RecordEvent {
		r.Event.Seq = r.Seq
	}
	before := s.p.Refused()
	if err := s.p.ApplyRecord(r); err != nil {
		s.t.Fatalf("ApplyRecord(%d): %v", r.Seq, err)
	}
	if s.p.Refused() != before {
		s.refused = append(s.refused, r.Seq)
	}
	s.recs = append(s.recs, r)
	return r
}

// event appends the ledger's next event of user: it continues the user's
// chain as the live projection has it.
func (s *stream) event(session, user string, d domain.Payload) domain.Record {
	s.t.Helper()
	e := link(s.p, domain.Event{ID: fmt.Sprintf("E%d", s.next()), Seq: s.next(), Time: t0.Add(time.Duration(s.next()) * time.Second), SessionID: session, UserKey: user, Data: d})
	return s.add(domain.EventRecord(e))
}

// replay stores the stored bytes of an earlier event again: same event,
// same digest, the chain digest of its original position.
func (s *stream) replay(r domain.Record) domain.Record {
	s.t.Helper()
	return s.add(r)
}

// rejected appends a message the reader refused (no or bad tag, wrong
// subject) under user's subjects ("": none).
func (s *stream) rejected(user string) domain.Record {
	s.t.Helper()
	return s.add(domain.Record{Kind: domain.RecordRejected, UserKey: user, Digest: sha256.Sum256(fmt.Appendf(nil, "junk %d", s.next())), Err: errors.New("not written by the ledger")})
}

// checkpoint appends a checkpoint record covering covers.
func (s *stream) checkpoint(covers uint64) domain.Record {
	s.t.Helper()
	return s.add(domain.Record{Kind: domain.RecordCheckpoint, Covers: covers, Digest: sha256.Sum256(fmt.Appendf(nil, "checkpoint %d", s.next()))})
}

func (s *stream) wasRefused(seq uint64) bool { return slices.Contains(s.refused, seq) }

// foldChain is the running hash of recs as an auditor computes it.
func foldChain(recs []domain.Record) integrity.Chain {
	var c integrity.Chain
	for _, r := range recs {
		c = c.Next(r.Seq, r.Digest)
	}
	return c
}

func user(t *testing.T, p *Sessions, key string) domain.User {
	t.Helper()
	u, ok := p.User(key)
	if !ok {
		t.Fatalf("user %s not held", key)
	}
	return u
}

// withoutLastSeq is dump without the users' and sessions' LastSeq, the
// one thing a refusal may change (it counts where the stream does).
func withoutLastSeq(p *Sessions) string {
	p.mu.Lock()
	saved := map[string]uint64{}
	for k, u := range p.users {
		saved["u"+k], u.LastSeq = u.LastSeq, 0
	}
	for k, s := range p.sessions {
		saved["s"+k], s.LastSeq = s.LastSeq, 0
	}
	p.mu.Unlock()
	d := dump(p)
	p.mu.Lock()
	for k, u := range p.users {
		u.LastSeq = saved["u"+k]
	}
	for k, s := range p.sessions {
		s.LastSeq = saved["s"+k]
	}
	p.mu.Unlock()
	return d
}

// TestReplayedGenuineEventIsRefused: the stored bytes of one of the
// ledger's events, stored again later (validly tagged, under the right
// subject), do not continue the user's chain and change nothing.
func TestReplayedGenuineEventIsRefused(t *testing.T) {
	s := newStream(t)
	issue1 := s.event(s1, "u1", issued())
	rot1 := s.event(s1, "u1", domain.SessionRotated{Generation: 1, RefreshToken: domain.Digest{KeyID: "d", Value: [32]byte{1}}})
	cut := s.event("", "u1", domain.UserSessionsRevoked{UserID: "alice"})
	issue2 := s.event(s2, "u1", issued())
	if _, ok := s.p.Session(s1); ok {
		t.Fatal("the revoke-all did not end s1")
	}
	before := withoutLastSeq(s.p)
	head := user(t, s.p, "u1")
	if head.ChainSeq != issue2.Seq || head.LastDigest != issue2.Digest {
		t.Fatalf("chain head %+v, want the issue of s2", head)
	}

	lastUser := cut.Seq // the last message under the user's user-event subjects
	for _, r := range []domain.Record{cut, issue1, rot1, issue2} {
		rep := s.replay(r)
		if r.Event.Type().IsUserEvent() {
			lastUser = rep.Seq
		}
		if !s.wasRefused(rep.Seq) {
			t.Fatalf("%s replayed at %d (first at %d) was applied", r.Event.Type(), rep.Seq, r.Seq)
		}
		if got := withoutLastSeq(s.p); got != before {
			t.Fatalf("%s replayed at %d changed the projection:\n%s", r.Event.Type(), rep.Seq, firstDiff(got, before))
		}
		u := user(t, s.p, "u1")
		if u.LastSeq != lastUser || u.ChainSeq != head.ChainSeq || u.LastDigest != head.LastDigest {
			t.Fatalf("after the replay at %d: user %+v; want LastSeq %d (the last message under its user events) and the chain head unchanged (%d)", rep.Seq, u, lastUser, head.ChainSeq)
		}
	}
	// The replayed revoke-all would have ended s2: it is still live.
	if got, ok := s.p.Session(s2); !ok || !got.Live() {
		t.Fatal("a replayed revoke-all ended a session issued after the original")
	}
	if s.p.Refused() != 4 {
		t.Fatalf("Refused() = %d, want 4", s.p.Refused())
	}
	// The ledger's next event continues the chain it knows.
	next := s.event(s2, "u1", domain.SessionRotated{Generation: 1})
	if s.wasRefused(next.Seq) {
		t.Fatal("the ledger's next event was refused after the replays")
	}
	if got, _ := s.p.Session(s2); got.Generation != 1 || got.LastSeq != next.Seq {
		t.Fatalf("s2 after the ledger's rotation: %+v", got)
	}
	if u := user(t, s.p, "u1"); u.ChainSeq != next.Seq || u.LastSeq != lastUser || u.LastDigest != next.Digest {
		t.Fatalf("user after the ledger's next event: %+v", u)
	}
}

// TestImpossibleTransitionsAreRefused: an event that continues the user's
// chain but cannot happen to the session is refused like a forgery.
func TestImpossibleTransitionsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history func(s *stream)
		bad     func(s *stream) domain.Record
	}{
		{"session issued twice", func(s *stream) { s.event(s1, "u1", issued()) },
			func(s *stream) domain.Record {
				return s.event(s1, "u1", domain.SessionIssued{UserID: "mallory", Policy: domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 99999}})
			}},
		{"rotation after the session was revoked", func(s *stream) {
			s.event(s1, "u1", issued())
			s.event(s1, "u1", domain.SessionRevoked{Reason: "admin"})
		}, func(s *stream) domain.Record { return s.event(s1, "u1", domain.SessionRotated{Generation: 1}) }},
		{"rotation after the session expired", func(s *stream) {
			s.event(s1, "u1", issued())
			s.event(s1, "u1", domain.SessionExpired{Reason: domain.ExpiredAbsolute})
		}, func(s *stream) domain.Record { return s.event(s1, "u1", domain.SessionRotated{Generation: 1}) }},
		{"rotation after a revoke-all ended it", func(s *stream) {
			s.event(s1, "u1", issued())
			s.event("", "u1", domain.UserSessionsRevoked{UserID: "alice"})
		}, func(s *stream) domain.Record { return s.event(s1, "u1", domain.SessionRotated{Generation: 1}) }},
		{"revocation after the end", func(s *stream) {
			s.event(s1, "u1", issued())
			s.event(s1, "u1", domain.SessionExpired{Reason: domain.ExpiredInactivity})
		}, func(s *stream) domain.Record { return s.event(s1, "u1", domain.SessionRevoked{Reason: "late"}) }},
		{"reuse after the end", func(s *stream) {
			s.event(s1, "u1", issued())
			s.event(s1, "u1", domain.SessionRevoked{Reason: "admin"})
		}, func(s *stream) domain.Record {
			return s.event(s1, "u1", domain.SessionReused{Outcome: domain.ReuseFamilyRevoked})
		}},
		{"rotation that skips a generation", func(s *stream) { s.event(s1, "u1", issued()) },
			func(s *stream) domain.Record { return s.event(s1, "u1", domain.SessionRotated{Generation: 2}) }},
		{"event of a session never issued", func(s *stream) { s.event(s1, "u1", issued()) },
			func(s *stream) domain.Record { return s.event(s2, "u1", domain.SessionRevoked{Reason: "x"}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t)
			tc.history(s)
			before := withoutLastSeq(s.p)
			head := user(t, s.p, "u1")
			bad := tc.bad(s)
			if !s.wasRefused(bad.Seq) {
				t.Fatalf("%s at %d was applied", bad.Event.Type(), bad.Seq)
			}
			if got := withoutLastSeq(s.p); got != before {
				t.Fatalf("the refused event changed the projection:\n%s", firstDiff(got, before))
			}
			if u := user(t, s.p, "u1"); u != head {
				t.Fatalf("user %+v; want it unchanged: %+v", u, head)
			}
			if s.p.Refused() != 1 {
				t.Fatalf("Refused() = %d", s.p.Refused())
			}
			// The ledger goes on from the head it knows.
			next := s.event(s2, "u1", issued())
			if s.wasRefused(next.Seq) {
				t.Fatal("the ledger's next event was refused")
			}
			if got, ok := s.p.Session(s2); !ok || !got.Live() || got.IssuedSeq != next.Seq {
				t.Fatalf("the session the ledger issued next: %+v held=%v", got, ok)
			}
		})
	}
}

// TestRefusedRecordChangesNoUser: a refused message under a user's subjects
// changes neither the user's last user event nor its chain head (an append
// whose expectation it breaks learns its sequence from the conflict), and a
// message for a user the projection does not hold creates none.
func TestRefusedRecordChangesNoUser(t *testing.T) {
	s := newStream(t)
	e1 := s.event(s1, "u1", issued())
	junk := s.rejected("u1")
	u := user(t, s.p, "u1")
	if u.LastSeq != 0 || u.ChainSeq != e1.Seq || u.LastDigest != e1.Digest {
		t.Fatalf("after a refused message: %+v; want LastSeq 0, ChainSeq %d and the digest of the issue", u, e1.Seq)
	}
	if s.p.Applied() != junk.Seq {
		t.Fatalf("Applied() = %d, want %d", s.p.Applied(), junk.Seq)
	}
	// What the ledger writes next (prev = the chain head) is applied.
	rot := s.event(s1, "u1", domain.SessionRotated{Generation: 1})
	if s.wasRefused(rot.Seq) || !bytesEqual(rot.Event.Prev, e1.Digest[:]) {
		t.Fatalf("the ledger's next event: refused=%v prev=%x", s.wasRefused(rot.Seq), rot.Event.Prev)
	}
	if got, _ := s.p.Session(s1); got.Generation != 1 {
		t.Fatalf("rotation not applied: %+v", got)
	}
	// An event continuing from the refused message's digest is refused.
	forged := domain.Event{ID: "F", Seq: s.next(), Time: t0, SessionID: s1, UserKey: "u1", Prev: junk.Digest[:], Data: domain.SessionRevoked{Reason: "forged"}, Digest: [32]byte{9}}
	if r := s.add(domain.EventRecord(forged)); !s.wasRefused(r.Seq) {
		t.Fatal("an event chained to a refused message was applied")
	}

	// Refused messages of users the projection does not hold.
	s.rejected("nobody")
	s.rejected("")
	s.add(domain.EventRecord(domain.Event{ID: "G", Time: t0, SessionID: s2, UserKey: "u9", Data: domain.SessionRotated{Generation: 1}, Digest: [32]byte{7}}))
	s.add(domain.EventRecord(domain.Event{ID: "H", Time: t0, UserKey: "u8", Prev: make([]byte, 32), Data: domain.UserDeactivated{UserID: "x"}, Digest: [32]byte{8}}))
	s.add(domain.Record{UserKey: "u7", Digest: [32]byte{6}}) // no kind at all
	for _, k := range []string{"nobody", "", "u9", "u7"} {
		if got, ok := s.p.User(k); ok {
			t.Errorf("a refused message created user %q: %+v", k, got)
		}
	}
	// One under a user's user-event subjects is where the user's next user
	// event must follow.
	if got, ok := s.p.User("u8"); !ok || got.LastSeq != 8 {
		t.Errorf("the refused user event under u8's subjects: user %+v held=%v, want LastSeq 8", got, ok)
	}
	if want := []uint64{2, 4, 5, 6, 7, 8, 9}; !slices.Equal(s.refused, want) {
		t.Fatalf("refused %v, want %v", s.refused, want)
	}
	if s.p.Refused() != 7 {
		t.Fatalf("Refused() = %d, want 7", s.p.Refused())
	}
	if u := user(t, s.p, "u1"); u.LastSeq != 0 || u.ChainSeq != rot.Seq {
		t.Fatalf("u1 after the others' refusals: %+v", u)
	}
	if s.p.Applied() != 9 {
		t.Fatalf("Applied() = %d", s.p.Applied())
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// TestNextCheckpoint: the checkpoint to write lists the refusals since the
// last checkpoint record and commits to the running hash of every record.
func TestNextCheckpoint(t *testing.T) {
	s := newStream(t)
	check := func(from, covers uint64, rejected []uint64, pending bool) {
		t.Helper()
		c, p := s.p.NextCheckpoint()
		if c.From != from || c.Covers != covers || !slices.Equal(c.Rejected, rejected) || p != pending || c.RejectedOmitted != 0 {
			t.Fatalf("NextCheckpoint = from %d covers %d rejected %v omitted %d pending %v; want from %d covers %d rejected %v pending %v",
				c.From, c.Covers, c.Rejected, c.RejectedOmitted, p, from, covers, rejected, pending)
		}
		if want := foldChain(s.recs); c.Chain != want {
			t.Fatalf("chain %s, want %s: the running hash of every record", c.Chain, want)
		}
	}
	if c, pending := s.p.NextCheckpoint(); pending || c.Covers != 0 || c.Chain != (integrity.Chain{}) || len(c.Rejected) != 0 {
		t.Fatalf("empty projection: %+v pending %v", c, pending)
	}
	s.event(s1, "u1", issued())                             // 1
	s.rejected("u1")                                        // 2
	s.event(s1, "u1", domain.SessionRotated{Generation: 1}) // 3
	s.replay(s.recs[0])                                     // 4: refused
	check(0, 4, []uint64{2, 4}, true)

	s.checkpoint(4) // 5
	check(4, 5, nil, false)
	s.checkpoint(4) // 6: the same sequence again (it was stored once; another message)
	check(4, 6, nil, false)

	s.rejected("") // 7
	check(4, 7, []uint64{7}, true)
	s.event(s2, "u2", issued()) // 8
	check(4, 8, []uint64{7}, true)

	// A checkpoint written before the instance that wrote it saw 8.
	s.checkpoint(7) // 9
	check(7, 9, nil, true)
	s.rejected("u2") // 10
	// A slow instance's checkpoint of an older sequence changes nothing.
	s.checkpoint(5) // 11
	check(7, 11, []uint64{10}, true)
	s.checkpoint(11) // 12
	check(11, 12, nil, false)

	// Records at or below the applied sequence are ignored, not hashed.
	chain, _ := s.p.NextCheckpoint()
	for _, r := range s.recs {
		if err := s.p.ApplyRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if again, _ := s.p.NextCheckpoint(); again.Chain != chain.Chain || s.p.Refused() != 4 {
		t.Fatalf("applying the records again changed the chain or the refusals (%d)", s.p.Refused())
	}

	// The caller's copy is its own.
	s.rejected("u1") // 13
	c, _ := s.p.NextCheckpoint()
	c.Rejected[0] = 999
	check(11, 13, []uint64{13}, true)
}

func TestNextCheckpointBoundsTheListedRefusals(t *testing.T) {
	s := newStream(t)
	s.checkpoint(0)
	n := integrity.MaxRejectedListed + 5
	for range n {
		s.rejected("u1")
	}
	c, pending := s.p.NextCheckpoint()
	if !pending || len(c.Rejected) != integrity.MaxRejectedListed || c.RejectedOmitted != 5 {
		t.Fatalf("%d refusals: %d listed, %d omitted, pending %v", n, len(c.Rejected), c.RejectedOmitted, pending)
	}
	if c.Rejected[0] != 2 || c.Rejected[len(c.Rejected)-1] != uint64(integrity.MaxRejectedListed+1) {
		t.Fatalf("listed %d..%d, want the first ones", c.Rejected[0], c.Rejected[len(c.Rejected)-1])
	}
	if c.Chain != foldChain(s.recs) {
		t.Fatal("chain")
	}
	s.checkpoint(uint64(n + 1))
	if c, _ := s.p.NextCheckpoint(); len(c.Rejected) != 0 || c.RejectedOmitted != 0 {
		t.Fatalf("after a checkpoint covering them: %d listed, %d omitted", len(c.Rejected), c.RejectedOmitted)
	}
}

// mixedStream is a stream with every kind of record: the ledger's events of
// three users, replays, impossible transitions, refused messages of known
// and unknown users, and checkpoints.
func mixedStream(t *testing.T) *stream {
	s := newStream(t)
	sid := func(i int) string { return fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7K8M9%04d", i) }
	s.event(sid(1), "u1", issued())
	s.event(sid(2), "u2", issued())
	s.rejected("u1")
	rot := s.event(sid(1), "u1", domain.SessionRotated{Generation: 1})
	s.checkpoint(4)
	s.replay(rot)
	s.event(sid(1), "u1", domain.SessionIssued{UserID: "alice"}) // issued twice
	s.event(sid(3), "u3", issued())
	s.rejected("nobody")
	cut := s.event("", "u2", domain.UserSessionsRevoked{UserID: "bob"})
	s.event(sid(2), "u2", domain.SessionRotated{Generation: 1}) // after the end
	s.event(sid(4), "u2", issued())
	s.replay(cut) // would end sid(4)
	s.checkpoint(11)
	s.event(sid(1), "u1", domain.SessionReused{Outcome: domain.ReuseFamilyRevoked})
	s.rejected("u1")
	s.event(sid(1), "u1", domain.SessionRevoked{Reason: domain.ReasonReuseDetected})
	s.event(sid(1), "u1", domain.SessionRevoked{Reason: "again"}) // after the end
	s.event("", "u3", domain.UserDeactivated{UserID: "carol"})
	s.event(sid(5), "u3", domain.SessionRotated{Generation: 1}) // never issued
	s.rejected("")
	s.event("", "u3", domain.UserReactivated{UserID: "carol"})
	s.event(sid(6), "u3", issued())
	s.rejected("u3")
	s.event(sid(6), "u3", domain.SessionRotated{Generation: 1})
	return s
}

// TestSnapshotWithRefusalsConverges: a projection restored from a snapshot
// taken anywhere in a stream with refused records, then given the rest of
// the stream, ends where the live projection does: same state, same
// running hash, same refusals to list, same decisions on the records after
// the snapshot.
func TestSnapshotWithRefusalsConverges(t *testing.T) {
	full := mixedStream(t)
	if len(full.refused) < 10 {
		t.Fatalf("the stream has only %d refused records: %v", len(full.refused), full.refused)
	}
	want, wantPending := full.p.NextCheckpoint()
	if want.Chain != foldChain(full.recs) {
		t.Fatal("the live projection's chain is not the fold of the records")
	}
	for k := 0; k <= len(full.recs); k++ {
		live := NewSessions(nil)
		for _, r := range full.recs[:k] {
			if err := live.ApplyRecord(r); err != nil {
				t.Fatal(err)
			}
		}
		data, start := live.Snapshot(testSealer)
		if start != uint64(k) {
			t.Fatalf("snapshot after %d records starts at %d", k, start)
		}
		q, err := RestoreSessions(data, testSealer, nil)
		if err != nil {
			t.Fatal(err)
		}
		var refused []uint64
		for _, r := range full.recs[k:] {
			before := q.Refused()
			if err := q.ApplyRecord(r); err != nil {
				t.Fatal(err)
			}
			if q.Refused() != before {
				refused = append(refused, r.Seq)
			}
		}
		var wantRefused []uint64
		for _, seq := range full.refused {
			if seq > uint64(k) {
				wantRefused = append(wantRefused, seq)
			}
		}
		if !slices.Equal(refused, wantRefused) {
			t.Errorf("snapshot after %d records: refused %v after it, the live projection %v", k, refused, wantRefused)
		}
		got, gotPending := q.NextCheckpoint()
		if got.Chain != want.Chain || got.From != want.From || got.Covers != want.Covers || !slices.Equal(got.Rejected, want.Rejected) {
			t.Errorf("snapshot after %d records: next checkpoint %+v, want %+v", k, got, want)
		}
		if gotPending != wantPending && !onlyCheckpoints(full.recs[k:]) {
			t.Errorf("snapshot after %d records: pending %v, want %v", k, gotPending, wantPending)
		}
		if g, w := dump(q), dump(full.p); g != w {
			t.Errorf("snapshot after %d records: state differs:\n%s", k, firstDiff(g, w))
		}
	}
}

// onlyCheckpoints: a restored projection owes a checkpoint until it sees a
// record that is not one (RestoreSessions is conservative).
func onlyCheckpoints(recs []domain.Record) bool {
	for _, r := range recs {
		if r.Kind != domain.RecordCheckpoint {
			return false
		}
	}
	return true
}

// TestFuzzySnapshotWithRefusalsConverges is TestFuzzySnapshotConverges with
// refused records in the stream: messages the reader refused (of held and
// unknown users), genuine events replayed later, and checkpoints, written
// while snapshots are taken. Each snapshot, restored and given the records
// after its start, ends where the live projection does, and refuses after
// its start exactly what the live projection refused.
func TestFuzzySnapshotWithRefusalsConverges(t *testing.T) {
	s := newStream(t)
	pol := domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 86400, InactivityTimeout: 3600}
	var ids []string
	gen := map[string]uint32{}
	userOf := func(i int) string { return fmt.Sprintf("u%d", i%700) }
	newSession := func() {
		i := len(ids)
		ids = append(ids, fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7%08d", i))
		s.event(ids[i], userOf(i), domain.SessionIssued{UserID: userOf(i), Policy: pol})
	}
	for range snapshotChunk + snapshotChunk/2 { // with the users, more than two chunks
		newSession()
	}
	type snap struct {
		data  []byte
		start uint64
	}
	snaps := make(chan snap, 4)
	writing := make(chan struct{})
	go func() {
		defer close(snaps)
		// At least one snapshot, even if a loaded machine runs this
		// goroutine only after the writes are done.
		for {
			d, start := s.p.Snapshot(testSealer)
			snaps <- snap{d, start}
			if len(snaps) == cap(snaps) {
				return
			}
			select {
			case <-writing:
				return
			default:
			}
		}
	}()
	for i := range 4000 {
		k := (i * 7919) % len(ids)
		sid, ukey := ids[k], userOf(k)
		switch i % 8 {
		case 0, 1, 2:
			if got, ok := s.p.Session(sid); ok && got.Live() {
				gen[sid]++
				s.event(sid, ukey, domain.SessionRotated{Generation: gen[sid]})
			}
		case 3:
			s.rejected(ukey)
		case 4:
			s.rejected(fmt.Sprintf("stranger%d", i))
		case 5:
			// A genuine event of the past, stored again.
			if r := s.recs[(i*31)%len(s.recs)]; r.Kind == domain.RecordEvent {
				s.replay(r)
			}
		case 6:
			if i%40 == 6 {
				s.checkpoint(s.p.Applied())
			} else if i%40 == 14 {
				s.event("", ukey, domain.UserSessionsRevoked{UserID: ukey})
			} else {
				newSession()
			}
		case 7:
			if got, ok := s.p.Session(sid); ok && got.Live() && i%3 == 0 {
				s.event(sid, ukey, domain.SessionRevoked{Reason: "x"})
			}
		}
	}
	close(writing)
	if len(s.refused) < 1000 {
		t.Fatalf("only %d refusals in the stream", len(s.refused))
	}
	want, _ := s.p.NextCheckpoint()
	wantState := dump(s.p)
	n, fuzzy := 0, 0
	for sn := range snaps {
		n++
		q, err := RestoreSessions(sn.data, testSealer, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.fuzzyUntil > sn.start {
			fuzzy++
		}
		var refused []uint64
		for _, r := range s.recs[sn.start:] {
			before := q.Refused()
			if err := q.ApplyRecord(r); err != nil {
				t.Fatal(err)
			}
			if q.Refused() != before {
				refused = append(refused, r.Seq)
			}
		}
		i, _ := slices.BinarySearch(s.refused, sn.start+1)
		if wantRefused := s.refused[i:]; !slices.Equal(refused, wantRefused) {
			t.Fatalf("snapshot %d (start %d): %d refusals after it, the live projection %d; first difference %s",
				n, sn.start, len(refused), len(wantRefused), firstSeqDiff(refused, wantRefused))
		}
		got, _ := q.NextCheckpoint()
		if got.Chain != want.Chain || got.From != want.From || got.Covers != want.Covers || !slices.Equal(got.Rejected, want.Rejected) {
			t.Fatalf("snapshot %d (start %d): next checkpoint from %d covers %d, %d listed; want from %d covers %d, %d listed (chains equal: %v)",
				n, sn.start, got.From, got.Covers, len(got.Rejected), want.From, want.Covers, len(want.Rejected), got.Chain == want.Chain)
		}
		if g := dump(q); g != wantState {
			t.Fatalf("snapshot %d (start %d): state differs:\n%s", n, sn.start, firstDiff(g, wantState))
		}
	}
	if n == 0 {
		t.Fatal("no snapshot taken")
	}
	t.Logf("%d snapshots checked (%d taken while records were applied), %d records, %d refused", n, fuzzy, len(s.recs), len(s.refused))
}

func firstSeqDiff(got, want []uint64) string {
	for i := range max(len(got), len(want)) {
		if i >= len(got) || i >= len(want) || got[i] != want[i] {
			g, w := "none", "none"
			if i < len(got) {
				g = fmt.Sprint(got[i])
			}
			if i < len(want) {
				w = fmt.Sprint(want[i])
			}
			return fmt.Sprintf("at #%d: restored refused %s, live %s", i, g, w)
		}
	}
	return "(none)"
}

// TestFuzzySnapshotKeepsImpossibleTransitionsRefused: an event that
// continues its user's chain but is an impossible transition, refused by
// the live projection while a snapshot was being encoded, must be refused
// again by the projection restored from that snapshot. Here it is the first
// event of a user the snapshot does not hold: a rotation of a session that
// was never issued.
func TestFuzzySnapshotKeepsImpossibleTransitionsRefused(t *testing.T) {
	for attempt := 1; ; attempt++ {
		s := newStream(t)
		for i := range snapshotChunk + 1 { // more records than one chunk: the lock is released while encoding
			s.event(fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7%08d", i), fmt.Sprintf("u%d", i), issued())
		}
		bad := domain.EventRecord(domain.Event{ID: "X", Time: t0, SessionID: "01JD3Z9V6Q4Q4WJ5X7K8M9ZZZZ", UserKey: "intruder",
			Data: domain.SessionRotated{Generation: 1}, Digest: sha256.Sum256([]byte("X"))})
		var snapped atomic.Bool
		landed := make(chan bool)
		go func() { // applies bad while the snapshot is being encoded, if it can
			for {
				s.p.mu.RLock()
				on := s.p.snapshotting
				s.p.mu.RUnlock()
				if on {
					s.add(bad)
					landed <- true
					return
				}
				if snapped.Load() {
					landed <- false
					return
				}
			}
		}()
		data, start := s.p.Snapshot(testSealer)
		snapped.Store(true)
		if !<-landed {
			continue
		}
		q, err := RestoreSessions(data, testSealer, nil)
		if err != nil {
			t.Fatal(err)
		}
		badSeq := uint64(len(s.recs))
		if badSeq <= start || badSeq > q.fuzzyUntil {
			if attempt == 10 {
				t.Fatalf("the event never landed inside a snapshot's encoding (start %d, end %d, event at %d)", start, q.fuzzyUntil, badSeq)
			}
			continue
		}
		if !s.wasRefused(badSeq) {
			t.Fatal("the live projection applied the impossible transition")
		}
		// The ledger then issues the user's first session (no prev).
		s.event("01JD3Z9V6Q4Q4WJ5X7K8M9YYYY", "intruder", issued())
		var refused []uint64
		for _, r := range s.recs[start:] {
			before := q.Refused()
			if err := q.ApplyRecord(r); err != nil {
				t.Fatal(err)
			}
			if q.Refused() != before {
				refused = append(refused, r.Seq)
			}
		}
		if !slices.Equal(refused, []uint64{badSeq}) {
			t.Errorf("snapshot %d..%d, the impossible transition at %d: the restored projection refused %v after the snapshot, the live one %v",
				start, q.fuzzyUntil, badSeq, refused, s.refused)
		}
		if u, ok := q.User("intruder"); !ok || u.ChainSeq != badSeq+1 {
			t.Errorf("restored: user %+v held=%v; live: %+v", u, ok, user(t, s.p, "intruder"))
		}
		if _, ok := q.Session("01JD3Z9V6Q4Q4WJ5X7K8M9YYYY"); !ok {
			t.Error("restored: the session the ledger issued after the impossible transition is not live")
		}
		if g, w := dump(q), dump(s.p); g != w {
			t.Errorf("state differs:\n%s", firstDiff(g, w))
		}
		return
	}
}
