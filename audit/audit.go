// Package audit checks and reads the ledger's event stream for auditors: it
// verifies the stream's integrity from the stored bytes alone, and renders a
// session's or user's history, and rebuilds the state as of an instant
// (AsOf). It depends on domain and projections only; the records come from
// eventstore.Feed.
package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/integrity"
)

// Record is one stored message of the stream.
type Record struct {
	Seq     uint64
	Subject string
	Data    []byte
}

// Problem is one integrity finding, at a stream sequence.
type Problem struct {
	Seq uint64 `json:"seq"`
	// missing, undecodable, subject, position, chain, transition; with
	// checkpoints: refused, checkpoint, tampered, truncated, rolled back
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func (p Problem) String() string { return fmt.Sprintf("seq %d: %s: %s", p.Seq, p.Kind, p.Detail) }

// Verifier checks a stream fed to it record by record, in stream order.
type Verifier struct {
	subjectOf func(domain.Event) string
	refused   func(seq uint64) (checkpointSeq uint64, refused bool)
	lastSeq   uint64
	users     map[string]link // user key → the user's last event written before expectations
	// The last stored message under each expectation filter (a session's
	// own subjects, "<user key>.<session id>"; a user's user-event subjects,
	// "<user key>.user"), whatever it is: what the stream compared an
	// append's expectation with.
	lastUnder   map[string]uint64
	deactivated map[string]bool // user key → deactivated
	sessions    map[string]*sessionState
	problems    []Problem
	events      uint64
	superseded  uint64
}

type link struct {
	seq    uint64
	digest [32]byte
}

type sessionState struct {
	domain.Session
	ended bool // nothing may follow, except the revoked owed after a reuse
	// endedByUser: a user event ended it (or its issue came after its
	// user's deactivation): a write decided before may still follow, and
	// changes nothing.
	endedByUser bool
}

// NewVerifier returns a verifier; subjectOf gives the subject an event must
// be stored under (eventstore.SessionSubject). refused, if not nil, tells the
// messages a checkpoint names as refused by the ledger (Checkpoints.Refused):
// they are reported as such and kept out of the histories.
func NewVerifier(subjectOf func(domain.Event) string, refused func(seq uint64) (uint64, bool)) *Verifier {
	return &Verifier{subjectOf: subjectOf, refused: refused, users: map[string]link{}, sessions: map[string]*sessionState{},
		lastUnder: map[string]uint64{}, deactivated: map[string]bool{}}
}

func (v *Verifier) report(seq uint64, kind, format string, args ...any) {
	v.problems = append(v.problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// Add checks one record (checkpoints are left to Checkpoints).
func (v *Verifier) Add(r Record) {
	if r.Seq != v.lastSeq+1 {
		v.report(r.Seq, "missing", "sequences %d to %d are not in the stream", v.lastSeq+1, r.Seq-1)
	}
	v.lastSeq = r.Seq
	if r.Subject == integrity.CheckpointSubject {
		return // Checkpoints checks them
	}
	// Every stored message counts for the expectation of the next append
	// under its subjects, refused ones included.
	under := expectationKey(r.Subject)
	before := v.lastUnder[under]
	if under != "" {
		v.lastUnder[under] = r.Seq
	}
	if v.refused != nil {
		if at, ok := v.refused(r.Seq); ok {
			v.report(r.Seq, "refused", "not written by the ledger, or replayed out of place: the ledger refused it (checkpoint at sequence %d); someone with write access to the stream put it there", at)
			return
		}
	}
	e, err := domain.DecodeEvent(r.Data)
	if err != nil {
		v.report(r.Seq, "undecodable", "%v", err)
		return
	}
	e.Seq = r.Seq
	v.events++
	if want := v.subjectOf(e); r.Subject != want {
		v.report(r.Seq, "subject", "stored under %q, but the event belongs under %q", r.Subject, want)
	}
	if e.Expect == nil {
		v.checkChain(e)
	} else if *e.Expect != before {
		v.report(e.Seq, "position", "written expecting the last message under its session's (or user's) subjects at sequence %d, but it follows sequence %d: replayed, or messages there were removed or reordered", *e.Expect, before)
	}
	v.checkTransition(e)
}

// expectationKey names the expectation filter a subject falls under:
// "<user key>.<session id>" or "<user key>.user"; "" for a subject outside
// the ledger's layout.
func expectationKey(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != "ledger" {
		return ""
	}
	return parts[1] + "." + parts[2]
}

// checkChain compares the prevdigest of an event written before
// expectations with the digest of the user's previous such event. A removed event breaks the chain at the next event of the
// same user; a reordered one where the order changes; an altered one at the
// next event of the same user (its own digest changed).
func (v *Verifier) checkChain(e domain.Event) {
	prev, seen := v.users[e.UserKey]
	switch {
	case !seen && e.Prev != nil:
		v.report(e.Seq, "chain", "first event of user %s in the stream, but it chains to an earlier one: the user's earlier events were removed", e.UserKey)
	case seen && e.Prev == nil:
		v.report(e.Seq, "chain", "does not chain to user %s's previous event (seq %d)", e.UserKey, prev.seq)
	case seen && !bytes.Equal(e.Prev, prev.digest[:]):
		v.report(e.Seq, "chain", "does not follow user %s's previous event (seq %d): that event was altered, or events between them were removed or reordered", e.UserKey, prev.seq)
	}
	v.users[e.UserKey] = link{seq: e.Seq, digest: e.Digest}
}

// checkTransition checks that the session's history is a valid sequence. An
// event written under an expectation that finds its session ended by a user
// event (or its user deactivated, for an issue) is a write decided before
// that user event and stored after it: it changed nothing, and is counted
// as superseded, not reported.
func (v *Verifier) checkTransition(e domain.Event) {
	switch d := e.Data.(type) {
	case domain.SessionIssued:
		if _, dup := v.sessions[e.SessionID]; dup {
			v.report(e.Seq, "transition", "session %s issued a second time", e.SessionID)
			return
		}
		s := &sessionState{}
		_ = s.Apply(e)
		if e.Expect != nil && v.deactivated[e.UserKey] {
			s.Status, s.EndReason, s.ended, s.endedByUser = domain.StatusRevoked, "issued after its user's deactivation", true, true
			v.superseded++
		}
		v.sessions[e.SessionID] = s
	case domain.UserSessionsRevoked, domain.UserDeactivated:
		if _, ok := d.(domain.UserDeactivated); ok {
			v.deactivated[e.UserKey] = true
		}
		for _, s := range v.sessions {
			if s.UserKey == e.UserKey && s.EndByUser(e.Seq, "cut-off") {
				s.ended, s.endedByUser = true, true
			}
		}
	case domain.UserReactivated:
		delete(v.deactivated, e.UserKey)
	default:
		s := v.sessions[e.SessionID]
		if s == nil {
			v.report(e.Seq, "transition", "%s for session %s, which was never issued", e.Type(), e.SessionID)
			return
		}
		_, revoked := d.(domain.SessionRevoked)
		if s.ended && !(revoked && s.RevocationPending) {
			if e.Expect != nil && s.endedByUser {
				v.superseded++
				return
			}
			v.report(e.Seq, "transition", "%s after session %s ended (%s)", e.Type(), e.SessionID, s.EndReason)
			return
		}
		if r, ok := d.(domain.SessionRotated); ok && r.Generation != s.Generation+1 {
			v.report(e.Seq, "transition", "session %s rotated to generation %d after generation %d", e.SessionID, r.Generation, s.Generation)
		}
		_ = s.Apply(e)
		s.ended = !s.Live()
	}
}

// Problems returns the findings so far, in stream order.
func (v *Verifier) Problems() []Problem { return v.problems }

// Events returns how many events decoded.
func (v *Verifier) Events() uint64 { return v.events }

// Superseded returns how many events changed nothing because a user event
// stored before them had ended what they were decided on.
func (v *Verifier) Superseded() uint64 { return v.superseded }

// Sessions returns how many sessions were issued.
func (v *Verifier) Sessions() int { return len(v.sessions) }

// Describe renders an event's data as a short human-readable detail.
func Describe(e domain.Event) string {
	switch d := e.Data.(type) {
	case domain.SessionIssued:
		var dev []string
		for _, f := range []string{d.Device.Name, d.Device.UserAgent, d.Device.IP} {
			if f != "" {
				dev = append(dev, f)
			}
		}
		device := "unknown device"
		if len(dev) > 0 {
			device = strings.Join(dev, ", ")
		}
		if d.ClientID == "" {
			return fmt.Sprintf("user %s, policy %s, from %s", d.UserID, d.Policy.Name, device)
		}
		return fmt.Sprintf("user %s, client %s, policy %s, from %s", d.UserID, d.ClientID, d.Policy.Name, device)
	case domain.SessionRotated:
		return fmt.Sprintf("generation %d", d.Generation)
	case domain.SessionReused:
		return fmt.Sprintf("generation %d presented at generation %d: %s", d.PresentedGeneration, d.CurrentGeneration, d.Outcome)
	case domain.SessionRevoked:
		return fmt.Sprintf("reason %s, by %s", d.Reason, d.Actor)
	case domain.SessionExpired:
		return fmt.Sprintf("reason %s", d.Reason)
	case domain.UserSessionsRevoked:
		return fmt.Sprintf("all sessions of user %s revoked, by %s", d.UserID, d.Actor)
	case domain.UserDeactivated:
		return fmt.Sprintf("user %s deactivated, by %s", d.UserID, d.Actor)
	case domain.UserReactivated:
		return fmt.Sprintf("user %s reactivated, by %s", d.UserID, d.Actor)
	}
	b, _ := json.Marshal(e.Data)
	return string(b)
}

// UserID returns the user id an event names in its data ("" for rotations and
// the like, which name only their session).
func UserID(e domain.Event) string {
	switch d := e.Data.(type) {
	case domain.SessionIssued:
		return d.UserID
	case domain.UserSessionsRevoked:
		return d.UserID
	case domain.UserDeactivated:
		return d.UserID
	case domain.UserReactivated:
		return d.UserID
	}
	return ""
}

// FormatTime is the timeline's time format.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
