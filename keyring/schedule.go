package keyring

import (
	"slices"
	"time"
)

// Active returns the generation of recs (sorted by generation, generation 0
// first) that is in force at now: the last one whose ActivateAt has come.
func Active(recs []Record, now time.Time) Record {
	active := recs[0]
	for _, r := range recs[1:] {
		if !r.ActivateAt.After(now) {
			active = r
		}
	}
	return active
}

// SigningWindow is when one signing key is in the JWKS and when it signs.
type SigningWindow struct {
	Record
	// SignsUntil is when the next generation took (or takes) over; zero
	// while none is scheduled.
	SignsUntil time.Time
	// RetireAt is when the key leaves the JWKS: its last token has expired
	// (SignsUntil plus the longest access-token lifetime plus leeway). Zero
	// while it signs with no successor scheduled.
	RetireAt time.Time
}

// SigningWindows returns the window of every signing generation in recs
// (sorted by generation). A key is published from when it is known until
// RetireAt; it signs from ActivateAt until SignsUntil. Keys retire
// retireAfter after they last signed, or the longest RetireAfter any record
// carries if that is longer.
func SigningWindows(recs []Record, retireAfter time.Duration) []SigningWindow {
	for _, r := range recs {
		retireAfter = max(retireAfter, r.RetireAfter)
	}
	out := make([]SigningWindow, len(recs))
	for i, r := range recs {
		out[i].Record = r
		if i+1 < len(recs) {
			next := recs[i+1]
			out[i].SignsUntil = next.ActivateAt
			out[i].RetireAt = next.ActivateAt.Add(retireAfter)
		}
	}
	return out
}

// Published returns the signing generations in the JWKS at now, and the
// first instant after now at which the active key or the published set
// changes (zero if none is scheduled).
func Published(recs []Record, retireAfter time.Duration, now time.Time) (published []Record, next time.Time) {
	soonest := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, w := range SigningWindows(recs, retireAfter) {
		soonest(w.ActivateAt)
		soonest(w.RetireAt)
		if w.RetireAt.IsZero() || now.Before(w.RetireAt) {
			published = append(published, w.Record)
		}
	}
	return published, next
}

// NextActivation returns the first ActivateAt after now among recs, zero if
// none.
func NextActivation(recs []Record, now time.Time) time.Time {
	i := slices.IndexFunc(recs, func(r Record) bool { return r.ActivateAt.After(now) })
	if i < 0 {
		return time.Time{}
	}
	return recs[i].ActivateAt
}
