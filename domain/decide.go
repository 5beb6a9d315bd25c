package domain

import "time"

// MaxLegacyGenerationsBehind bounds the chain walk that tells a genuine
// rotated-out token in the legacy form (untagged, issued before tags) from a
// forged one: a forged legacy token costs at most this many HMACs, less than
// signing one access token. A tagged token needs no walk. A legacy token
// further behind its session is refused as unknown, not as reuse: reuse
// detection for tokens issued before the upgrade reaches back this far.
const MaxLegacyGenerationsBehind = 64

// RefreshOutcome names what a refresh did, for callers and metrics.
type RefreshOutcome string

// Refresh outcomes.
const (
	OutcomeRotated   RefreshOutcome = "rotated"
	OutcomeTolerated RefreshOutcome = "tolerated"
	OutcomeReused    RefreshOutcome = "reused"
	OutcomeExpired   RefreshOutcome = "expired"
	OutcomeInvalid   RefreshOutcome = "invalid"
)

// RefreshDecision is what a refresh should record and answer. Event is nil when
// nothing is recorded; Err is the caller's answer once Event is stored; Token
// is the refresh token to hand out when Err is nil.
type RefreshDecision struct {
	Event   Payload
	Err     error
	Outcome RefreshOutcome
	Token   RefreshToken
}

// GenerationsBehind reports whether t is a genuine refresh token of s, and how
// many rotations ago it was current (0: it is the current token). A forged
// token, or one of another session, is not genuine. Comparisons are in
// constant time, and the work is bounded: for a tagged token, one HMAC per
// refresh-token key held to find the key that sealed it (its tag proves that
// the ledger issued it, so a token two or more rotations behind needs no
// walk) and at most two more (the current one and the one before lead to the
// recorded digest); about twice MaxLegacyGenerationsBehind for a legacy one.
// A legacy token's chain is walked with the first generation's key
// (LegacyKeyID), the one of the ledger before tags: once its session has rotated under a newer key, a
// legacy token behind it is not recognised (refused as unknown, not taken
// for reuse).
func (k TokenKeys) GenerationsBehind(s *Session, t RefreshToken) (behind uint32, genuine bool) {
	behind, _, genuine = k.generationsBehind(s, t)
	return behind, genuine
}

// generationsBehind is GenerationsBehind, also returning the key that
// derives t's successor (found on the way: its sealer, or the first key).
func (k TokenKeys) generationsBehind(s *Session, t RefreshToken) (behind uint32, d TokenKey, genuine bool) {
	if t.SessionID != s.ID || t.Generation > s.Generation {
		return 0, d, false
	}
	behind = s.Generation - t.Generation
	switch {
	case t.Tagged:
		var ok bool
		if d, ok = k.sealer(t); !ok {
			return 0, d, false
		}
		if behind >= 2 {
			return behind, d, true
		}
	case behind > MaxLegacyGenerationsBehind:
		return 0, d, false
	default:
		d = k.legacy()
	}
	// The current token, or the one before it, must lead to the session's
	// recorded digest.
	next := t
	for i := uint32(0); i < behind; i++ {
		next = d.successor(next)
	}
	return behind, d, k.Matches(next, s.Token)
}

// DecideRefresh decides a refresh of session s with token t at now. Tokens
// rotated out exactly one rotation ago are tolerated for grace after that
// rotation (0 disables); any other rotated-out genuine token revokes the
// session. A forged token records nothing.
func DecideRefresh(s *Session, t RefreshToken, keys TokenKeys, now time.Time, grace time.Duration) RefreshDecision {
	if s == nil {
		return RefreshDecision{Err: ErrTokenUnknown, Outcome: OutcomeInvalid}
	}
	behind, d, genuine := keys.generationsBehind(s, t)
	switch {
	case !genuine:
		return RefreshDecision{Err: ErrTokenUnknown, Outcome: OutcomeInvalid}
	case s.RevocationPending:
		return RefreshDecision{Err: ErrTokenReused, Outcome: OutcomeReused}
	case !s.Live():
		return RefreshDecision{Err: ErrSessionEnded, Outcome: OutcomeInvalid}
	}
	if expired := DecideExpire(s, now); expired != nil {
		return RefreshDecision{Event: expired, Err: ErrSessionExpired, Outcome: OutcomeExpired}
	}
	switch {
	case behind == 0:
		next := keys.current().seal(d.successor(t))
		return RefreshDecision{
			Event:   SessionRotated{Generation: next.Generation, RefreshToken: keys.Digest(next)},
			Outcome: OutcomeRotated,
			Token:   next,
		}
	case behind == 1 && grace > 0 && now.Before(s.RotatedAt.Time().Add(grace)):
		return RefreshDecision{
			Event:   SessionReused{PresentedGeneration: t.Generation, CurrentGeneration: s.Generation, Outcome: ReuseTolerated},
			Outcome: OutcomeTolerated,
			// The current token: the same successor, sealed as before.
			Token: keys.sealedBy(s.Token.KeyID).seal(d.successor(t)),
		}
	default:
		return RefreshDecision{
			Event:   SessionReused{PresentedGeneration: t.Generation, CurrentGeneration: s.Generation, Outcome: ReuseFamilyRevoked},
			Err:     ErrTokenReused,
			Outcome: OutcomeReused,
		}
	}
}

// DecideIssue decides whether a session may be issued to user u (nil when the
// ledger holds no state for the user).
func DecideIssue(u *User) error {
	if u != nil && u.Deactivated {
		return ErrUserDeactivated
	}
	return nil
}

// DecideRevoke decides a sign-out or admin revoke of s.
func DecideRevoke(s *Session, reason, actor string) (Payload, error) {
	if s == nil || !s.Live() {
		return nil, ErrSessionNotFound
	}
	return SessionRevoked{Reason: reason, Actor: actor}, nil
}

// DecideCompleteRevocation returns the session.revoked event that follows a
// reuse which revoked the family, or nil when none is owed.
func DecideCompleteRevocation(s *Session) Payload {
	if s == nil || !s.RevocationPending {
		return nil
	}
	return SessionRevoked{Reason: ReasonReuseDetected, Actor: ActorLedger}
}

// DecideExpire returns the session.expired event for a live session past a
// deadline at now, or nil.
func DecideExpire(s *Session, now time.Time) Payload {
	if s == nil || !s.Live() {
		return nil
	}
	if reason, expired := s.ExpiredAt(now); expired {
		return SessionExpired{Reason: reason}
	}
	return nil
}
