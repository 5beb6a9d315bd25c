package projections

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	s1 = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PA"
	s2 = "01JD3Z9V6Q4Q4WJ5X7K8M9N0PB"
)

func apply(t *testing.T, p *Sessions, seq uint64, session string, data domain.Payload) {
	t.Helper()
	if err := applyLinked(p, domain.Event{ID: "E", Seq: seq, Time: t0, SessionID: session, UserKey: "u1", Data: data}); err != nil {
		t.Fatal(err)
	}
}

func issued() domain.SessionIssued {
	return domain.SessionIssued{UserID: "alice", Policy: domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 3600}}
}

func TestCutOffEndsOnlyEarlierSessions(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 1, s1, issued())
	apply(t, p, 2, "", domain.UserSessionsRevoked{UserID: "alice"})
	apply(t, p, 3, s2, issued())
	if _, ok := p.Session(s1); ok {
		t.Fatal("session issued before the cut-off is still held")
	}
	if s, ok := p.Session(s2); !ok || !s.Live() {
		t.Fatal("session issued after the cut-off was ended")
	}
	if u, ok := p.User("u1"); !ok || u.LastSeq != 2 {
		t.Fatalf("user %+v", u)
	}
	apply(t, p, 4, s2, domain.SessionRevoked{Reason: "x"})
	if p.LiveSessions() != 0 {
		t.Fatal("revoked session still held")
	}
	// The user stays, with its chain head: a genuine event replayed later
	// is refused by it, however long ago the user's sessions ended.
	if u, ok := p.User("u1"); !ok || u.ChainSeq != 4 || u.Deactivated {
		t.Fatalf("a user with no sessions must keep its chain head: %+v held=%v", u, ok)
	}
}

func TestApplyIgnoresSequencesAlreadyApplied(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 5, s1, issued())
	apply(t, p, 5, s1, domain.SessionRevoked{Reason: "replayed"})
	apply(t, p, 3, s1, domain.SessionRevoked{Reason: "older"})
	if s, ok := p.Session(s1); !ok || !s.Live() {
		t.Fatal("an event at or below the applied sequence changed state")
	}
	if p.Applied() != 5 {
		t.Fatalf("applied %d", p.Applied())
	}
}

func TestDeactivatedUserIsKept(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 1, s1, issued())
	apply(t, p, 2, "", domain.UserDeactivated{UserID: "alice"})
	u, ok := p.User("u1")
	if !ok || !u.Deactivated || p.LiveSessions() != 0 {
		t.Fatalf("after deactivation: user %+v held=%v live=%d", u, ok, p.LiveSessions())
	}
	apply(t, p, 3, "", domain.UserReactivated{UserID: "alice"})
	if u, ok := p.User("u1"); !ok || u.Deactivated || u.ChainSeq != 3 {
		t.Fatalf("reactivated user: %+v held=%v", u, ok)
	}
}

func TestReuseRevocationStaysUntilAnnounced(t *testing.T) {
	p := NewSessions(nil)
	apply(t, p, 1, s1, issued())
	apply(t, p, 2, s1, domain.SessionReused{Outcome: domain.ReuseFamilyRevoked})
	if got := p.PendingRevocations(); len(got) != 1 || got[0].ID != s1 {
		t.Fatalf("pending %v", got)
	}
	if len(p.UserSessions("u1")) != 0 {
		t.Fatal("a reuse-revoked session is listed as live")
	}
	apply(t, p, 3, s1, domain.SessionRevoked{Reason: domain.ReasonReuseDetected})
	if len(p.PendingRevocations()) != 0 || p.LiveSessions() != 0 {
		t.Fatal("session still held after its revocation was recorded")
	}
}

func TestWaitApplied(t *testing.T) {
	p := NewSessions(nil)
	done := make(chan error)
	go func() { done <- p.WaitApplied(context.Background(), 2) }()
	apply(t, p, 1, s1, issued())
	select {
	case <-done:
		t.Fatal("returned before sequence 2 was applied")
	case <-time.After(20 * time.Millisecond):
	}
	apply(t, p, 2, s1, domain.SessionRevoked{})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := p.WaitApplied(ctx, 9); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("timeout: %v", err)
	}
	go func() { done <- p.WaitApplied(context.Background(), 9) }()
	time.Sleep(10 * time.Millisecond)
	p.Fail(errors.New("broken"))
	if err := <-done; !errors.Is(err, domain.ErrProjectionFailed) {
		t.Fatalf("after Fail: %v", err)
	}
}

func TestDueFollowsDeadlines(t *testing.T) {
	p := NewSessions(nil)
	pol := func(inactivity domain.Seconds) domain.SessionIssued {
		return domain.SessionIssued{UserID: "alice", Policy: domain.Policy{AccessTokenTTL: 1, AbsoluteLifetime: 1000, InactivityTimeout: inactivity}}
	}
	ids := []string{"01JD3Z9V6Q4Q4WJ5X7K8M9N0P1", "01JD3Z9V6Q4Q4WJ5X7K8M9N0P2", "01JD3Z9V6Q4Q4WJ5X7K8M9N0P3", "01JD3Z9V6Q4Q4WJ5X7K8M9N0P4"}
	apply(t, p, 1, ids[0], pol(30))
	apply(t, p, 2, ids[1], pol(10))
	apply(t, p, 3, ids[2], pol(20))
	apply(t, p, 4, ids[3], pol(0)) // absolute only: 1000 s
	due := func(at time.Duration, limit int) []string {
		var out []string
		for _, s := range p.Due(t0.Add(at), limit) {
			out = append(out, s.ID)
		}
		return out
	}
	if got := due(9*time.Second, 10); len(got) != 0 {
		t.Fatalf("due at 9s: %v", got)
	}
	if got := due(20*time.Second, 10); len(got) != 2 || got[0] != ids[1] || got[1] != ids[2] {
		t.Fatalf("due at 20s: %v, want [%s %s]", got, ids[1], ids[2])
	}
	if got := due(time.Hour, 2); len(got) != 2 {
		t.Fatalf("limit not honoured: %v", got)
	}
	// A rotation at 15 s moves session 2's inactivity deadline to 25 s.
	if err := applyLinked(p, domain.Event{Seq: 5, Time: t0.Add(15 * time.Second), SessionID: ids[1], UserKey: "u1",
		Data: domain.SessionRotated{Generation: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := due(20*time.Second, 10); len(got) != 1 || got[0] != ids[2] {
		t.Fatalf("due at 20s after the rotation: %v", got)
	}
	apply(t, p, 6, ids[2], domain.SessionExpired{Reason: domain.ExpiredInactivity})
	if got := due(999*time.Second, 10); len(got) != 2 || got[0] != ids[1] || got[1] != ids[0] {
		t.Fatalf("due at 999s: %v", got)
	}
	if got := due(1000*time.Second, 10); len(got) != 3 || got[2] != ids[3] {
		t.Fatalf("due at 1000s: %v", got)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	p := NewSessions(nil)
	full := domain.SessionIssued{UserID: "alice", ClientID: "ios-app", Policy: domain.Policy{Name: "custom", AccessTokenTTL: 60, AbsoluteLifetime: 3600, InactivityTimeout: 600},
		Device: domain.Device{IP: "203.0.113.1", UserAgent: "UA", Name: "phone"}, Claims: []byte(`{"r":1}`),
		RefreshToken: domain.Digest{KeyID: "d1", Value: [32]byte{1, 2, 3}}}
	apply(t, p, 1, s1, full)
	apply(t, p, 2, s1, domain.SessionRotated{Generation: 1, RefreshToken: domain.Digest{KeyID: "d1", Value: [32]byte{4, 5}}})
	apply(t, p, 3, s2, issued())
	apply(t, p, 4, s2, domain.SessionReused{Outcome: domain.ReuseFamilyRevoked})
	if err := applyLinked(p, domain.Event{Seq: 5, Time: t0, UserKey: "u2", Data: domain.UserDeactivated{UserID: "bob"}}); err != nil {
		t.Fatal(err)
	}
	data, seq := p.Snapshot(testSealer)
	if seq != 5 {
		t.Fatalf("snapshot covers %d, want 5", seq)
	}
	q, err := RestoreSessions(data, testSealer, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Applied() != 5 {
		t.Fatalf("restored applied %d", q.Applied())
	}
	for _, id := range []string{s1, s2} {
		a, _ := p.Session(id)
		b, ok := q.Session(id)
		if !ok || render(a) != render(b) {
			t.Fatalf("session %s:\n got %+v\nwant %+v", id, b, a)
		}
	}
	if u, ok := q.User("u2"); !ok || !u.Deactivated {
		t.Fatalf("deactivated user lost: %+v", u)
	}
	if len(q.PendingRevocations()) != 1 || q.LiveSessions() != 1 {
		t.Fatal("pending revocation or live count lost")
	}
	if due := q.Due(t0.Add(10*time.Minute), 10); len(due) != 1 || due[0].ID != s1 {
		t.Fatalf("deadline heap not rebuilt: %v", due)
	}
	// It keeps working as a projection.
	if err := applyLinked(q, domain.Event{Seq: 6, Time: t0, SessionID: s1, UserKey: "u1", Data: domain.SessionRevoked{}}); err != nil || q.LiveSessions() != 0 {
		t.Fatalf("apply after restore: %v, live %d", err, q.LiveSessions())
	}

	for name, bad := range map[string][]byte{
		"flipped byte":                    flip(data, len(data)/2),
		"truncated":                       data[:len(data)-40],
		"empty":                           nil,
		"other version":                   reseal(t, bytes.Replace(unseal(t, data), []byte{'P', SnapshotVersion}, []byte{'P', SnapshotVersion - 1}, 1)),
		"garbage body":                    reseal(t, append([]byte{'S', 'L', 'S', 'N', 'A', 'P', SnapshotVersion}, "\x05\xff\xff\xff\xff\x0f"...)),
		"forged: sealed with another key": otherSealer.Seal(unseal(t, data)),
		"forged: unkeyed checksum":        resum(unseal(t, data)),
	} {
		if _, err := RestoreSessions(bad, testSealer, nil); !errors.Is(err, ErrSnapshotMismatch) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}

// The keys the test snapshots are sealed with, and keys of someone else.
var testSealer, otherSealer = tagKeys(1), tagKeys(2)

func tagKeys(b byte) *integrity.TagKeys {
	k, err := integrity.NewTagKeys("t", map[string][]byte{"t": bytes.Repeat([]byte{b}, 32)})
	if err != nil {
		panic(err)
	}
	return k
}

func unseal(t *testing.T, data []byte) []byte {
	t.Helper()
	b, err := testSealer.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reseal seals body properly, so only the content is wrong.
func reseal(t *testing.T, body []byte) []byte { return testSealer.Seal(append([]byte(nil), body...)) }

// link makes e continue its user's chain in p, as the ledger's writes do,
// and gives it a digest of its own.
func link(p *Sessions, e domain.Event) domain.Event {
	if u, ok := p.User(e.UserKey); ok && u.ChainSeq > 0 {
		e.Prev = append([]byte(nil), u.LastDigest[:]...)
	}
	e.Digest = sha256.Sum256(binary.AppendUvarint([]byte(e.UserKey), e.Seq))
	return e
}

func applyLinked(p *Sessions, e domain.Event) error { return p.Apply(link(p, e)) }

// resum appends an unkeyed checksum (what snapshots carried before they
// were sealed).
func resum(body []byte) []byte {
	sum := sha256.Sum256(body)
	return append(append([]byte(nil), body...), sum[:]...)
}

// TestFuzzySnapshotConverges takes snapshots while a writer applies events,
// restores each, replays the events after its start sequence, and requires the
// result to equal the live projection.
func TestFuzzySnapshotConverges(t *testing.T) {
	p := NewSessions(nil)
	var log []domain.Event
	seq := uint64(0)
	emit := func(sid, ukey string, d domain.Payload) {
		seq++
		e := link(p, domain.Event{Seq: seq, Time: t0.Add(time.Duration(seq) * time.Millisecond), SessionID: sid, UserKey: ukey, Data: d})
		log = append(log, e)
		if err := p.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	pol := domain.Policy{AccessTokenTTL: 60, AbsoluteLifetime: 86400, InactivityTimeout: 3600}
	gen := map[string]uint32{}
	var ids []string
	newSession := func(i int) {
		sid := fmt.Sprintf("01JD3Z9V6Q4Q4WJ5X7%08d", i)
		ids = append(ids, sid)
		emit(sid, fmt.Sprintf("u%d", i%500), domain.SessionIssued{UserID: fmt.Sprintf("user-%d", i%500), Policy: pol})
	}
	for i := 0; i < 3*snapshotChunk; i++ {
		newSession(i)
	}
	type snap struct {
		data  []byte
		start uint64
	}
	snaps := make(chan snap, 8)
	writing := make(chan struct{})
	go func() { // snapshots while the writer runs
		defer close(snaps)
		for {
			select {
			case <-writing:
				return
			default:
			}
			d, s := p.Snapshot(testSealer)
			snaps <- snap{d, s}
			if len(snaps) == cap(snaps) {
				return
			}
		}
	}()
	for i := 0; i < 20_000; i++ {
		sid := ids[(i*7919)%len(ids)]
		ukey := fmt.Sprintf("u%d", ((i*7919)%len(ids))%500)
		switch i % 10 {
		case 0, 1, 2, 3, 4:
			if s, ok := p.Session(sid); ok && s.Live() {
				gen[sid]++
				emit(sid, ukey, domain.SessionRotated{Generation: gen[sid]})
			}
		case 5:
			if s, ok := p.Session(sid); ok && s.Live() {
				emit(sid, ukey, domain.SessionRevoked{Reason: "x"})
			}
		case 6:
			newSession(len(ids))
		case 7:
			if i%100 == 7 {
				emit("", ukey, domain.UserSessionsRevoked{UserID: "x"})
			}
		case 8:
			if i%200 == 8 {
				emit("", ukey, domain.UserDeactivated{UserID: "x"})
			} else if i%200 == 108 {
				emit("", ukey, domain.UserReactivated{UserID: "x"})
			}
		case 9:
			if s, ok := p.Session(sid); ok && s.Live() {
				emit(sid, ukey, domain.SessionReused{Outcome: domain.ReuseFamilyRevoked})
			}
		}
	}
	close(writing)
	n := 0
	for sn := range snaps {
		n++
		q, err := RestoreSessions(sn.data, testSealer, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range log[sn.start:] {
			if err := q.Apply(e); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := dump(q), dump(p); got != want {
			t.Fatalf("snapshot %d (start %d) restored and replayed differs from the live projection:\n%s", n, sn.start, firstDiff(got, want))
		}
	}
	if n == 0 {
		t.Fatal("no snapshot taken")
	}
	t.Logf("%d snapshots checked", n)
}

// dump renders a projection's whole state in a canonical order.
func dump(p *Sessions) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var lines []string
	for _, s := range p.sessions {
		lines = append(lines, "S "+render(s.Session))
	}
	for _, u := range p.users {
		lines = append(lines, fmt.Sprintf("U %+v %d", u.User, len(u.sessions)))
	}
	lines = append(lines, fmt.Sprintf("pending %d deadlines %d", len(p.pending), len(p.deadlines)))
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// render prints a session with its policy's value, not its address.
func render(s domain.Session) string {
	pol := *s.Policy
	s.Policy = nil
	return fmt.Sprintf("%+v %+v", s, pol)
}

// firstDiff shows the first line where two dumps differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var a, b string
		if i < len(g) {
			a = g[i]
		}
		if i < len(w) {
			b = w[i]
		}
		if a != b {
			return fmt.Sprintf("line %d\n got: %s\nwant: %s", i, a, b)
		}
	}
	return "(no difference)"
}
