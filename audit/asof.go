package audit

import (
	"cmp"
	"slices"
	"time"

	"github.com/sessionledger/sessionledger/domain"
	"github.com/sessionledger/sessionledger/projections"
)

// Skew is how far past an instant a reader must go on for events stamped by
// instances whose clocks differ slightly: the stream is in append order, and
// event times are only nearly in that order.
const Skew = time.Minute

// AsOf rebuilds the state at an instant from the stream, fed in stream order:
// the same projection the ledger runs, over the events stamped at or before
// the instant.
type AsOf struct {
	at     time.Time
	proj   *projections.Sessions
	issued int
}

// NewAsOf returns an AsOf for instant at.
func NewAsOf(at time.Time) *AsOf { return &AsOf{at: at, proj: projections.NewSessions(nil)} }

// Add folds e in if it was recorded by the instant. It reports false once the
// stream is past the instant by more than Skew: nothing later can matter.
func (a *AsOf) Add(e domain.Event) (more bool, err error) {
	switch {
	case e.Time.After(a.at.Add(Skew)):
		return false, nil
	case e.Time.After(a.at):
		return true, nil
	}
	if e.Type() == domain.TypeSessionIssued {
		a.issued++
	}
	return true, a.proj.Apply(e)
}

// Issued is how many sessions were issued by the instant.
func (a *AsOf) Issued() int { return a.issued }

// Live returns the sessions live at the instant (of userID only, unless it is
// empty), oldest first, and how many users they belong to.
func (a *AsOf) Live(userID string) (live []domain.Session, users int) {
	seen := map[string]bool{}
	for _, s := range a.proj.Live() {
		if _, expired := s.ExpiredAt(a.at); expired || (userID != "" && s.UserID != userID) {
			continue
		}
		live = append(live, s)
		seen[s.UserKey] = true
	}
	slices.SortFunc(live, func(x, y domain.Session) int { return cmp.Compare(x.IssuedSeq, y.IssuedSeq) })
	return live, len(seen)
}
