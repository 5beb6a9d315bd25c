package domain

import (
	"cmp"
	"math"
	"slices"
)

// SessionHistory is a session's history: its own events (own, in stream
// order) and, in stream order among them, the user event that ended it when
// a revoke-all or a deactivation of its user did (one stored after its issue
// and before any own event that ended it). userEvents returns the user's
// events after the session's issue, in stream order (others are ignored).
// Own events stored after that user event are writes decided before it that
// lost the race (per-session concurrency lets them land): they changed
// nothing, and stay where the stream has them. Nothing else after the end
// belongs to the session: a later reactivation or revoke-all is the user's
// history, not the session's. The HTTP history endpoint and the auditors'
// timeline both use this rule.
func SessionHistory(own []Event, userEvents func() ([]Event, error)) ([]Event, error) {
	if len(own) == 0 {
		return own, nil
	}
	var s Session
	ownEnd := uint64(math.MaxUint64) // the own event that ended it, if one did
	for _, e := range own {
		_ = s.Apply(e)
		if !s.Live() && ownEnd == math.MaxUint64 {
			ownEnd = e.Seq
		}
	}
	// Even a session that its own events ended may have been ended before
	// by a user event: an own end stored after a cut-off lost the race to it.
	user, err := userEvents()
	if err != nil {
		return nil, err
	}
	for _, e := range user {
		if e.Seq > s.IssuedSeq && e.Seq < ownEnd && e.Type().EndsSessions() {
			i, _ := slices.BinarySearchFunc(own, e.Seq, func(o Event, seq uint64) int { return cmp.Compare(o.Seq, seq) })
			out := append(own[:i:i], e)
			return append(out, own[i:]...), nil
		}
	}
	return own, nil
}
