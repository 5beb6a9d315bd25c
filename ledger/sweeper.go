package ledger

import (
	"context"
	"time"

	"github.com/sessionledger/sessionledger/domain"
)

// Sweeper defaults.
const (
	DefaultSweepInterval = 250 * time.Millisecond
	sweepBatch           = 1000
)

// ExpireDue records session.expired for every live session past its deadline
// (up to a batch) and returns how many this call recorded. Any number of
// instances may sweep at once: the per-user expected sequence lets one append
// win, and the others, deciding again on the caught-up state, write nothing.
func (l *Ledger) ExpireDue(ctx context.Context) int {
	n := 0
	for _, s := range l.proj.Due(l.cfg.Now(), sweepBatch) {
		e, err := l.expire(ctx, s)
		if err != nil {
			l.log.Error("ledger: record expiry", "session_id", s.ID, "err", err)
			continue
		}
		if e.Data != nil {
			n++
		}
	}
	return n
}

// expire records session.expired for s if it is due, under one request budget.
func (l *Ledger) expire(ctx context.Context, s domain.Session) (e domain.Event, err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	e, _, _, err = l.write(ctx, s.UserKey, func(now time.Time) decision {
		cur, ok := l.proj.Session(s.ID)
		if !ok {
			return decision{}
		}
		return decision{event: domain.DecideExpire(&cur, now), session: s.ID, expect: cur.LastSeq}
	})
	return e, err
}

// Sweep runs until ctx ends: every interval it records due expiries and the
// session.revoked still owed after a reuse, so subscribers and auditors see
// them even when no client comes back.
func (l *Ledger) Sweep(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.ExpireDue(ctx)
			l.CompletePendingRevocations(ctx)
		}
	}
}
