package ledger

import (
	"context"
	"errors"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/sessionledger/sessionledger/domain"
)

// Caller is the user and session behind a self-service request.
type Caller struct {
	UserID    string
	SessionID string
}

// Authenticate checks an access token presented by its user, as Introspect
// checks one: genuine (the key its kid names, that key's algorithm),
// unexpired, and of a live session, linearizably. A refresh token is not an
// access token: ok is false.
func (l *Ledger) Authenticate(ctx context.Context, raw string) (_ Caller, ok bool, err error) {
	in, err := l.Introspect(ctx, raw)
	if err != nil || !in.Active || in.TokenType != "access_token" {
		return Caller{}, false, err
	}
	return Caller{UserID: in.Subject, SessionID: in.SessionID}, true, nil
}

// selfServiceConcurrency bounds the revocations SignOutOthers appends at once.
const selfServiceConcurrency = 8

// RevokeOwnSession ends one of the caller's own sessions, recorded with
// actor "user". Another user's session, or one that has ended, is
// domain.ErrSessionNotFound: which session ids exist is not told.
func (l *Ledger) RevokeOwnSession(ctx context.Context, c Caller, sessionID string) (err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	s, ok, err := l.session(ctx, sessionID)
	if err != nil {
		return err
	}
	if !ok || !s.Live() || s.UserID != c.UserID {
		return domain.ErrSessionNotFound
	}
	return l.revoke(ctx, s.UserKey, s.ID, domain.ReasonUserRevoked, domain.ActorUser)
}

// SignOutOthers ends every live session of the caller's user but the
// caller's own, each with a session.revoked recorded with actor "user", and
// returns how many it ended. It reads the sessions linearizably
// (Ledger.Sessions): every session issued before it was called is ended. A
// session that ends meanwhile by other means is not counted.
func (l *Ledger) SignOutOthers(ctx context.Context, c Caller) (revoked int, err error) {
	ctx, done := l.budget(ctx)
	defer done(&err)
	var others []domain.Session
	page := Page{Limit: MaxPageLimit}
	for {
		sessions, next, err := l.Sessions(ctx, c.UserID, page)
		if err != nil {
			return 0, err
		}
		for _, s := range sessions {
			if s.ID != c.SessionID {
				others = append(others, s)
			}
		}
		if next == "" {
			break
		}
		page.Cursor = next
	}
	var n atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(selfServiceConcurrency)
	for _, s := range others {
		g.Go(func() error {
			err := l.revoke(gctx, s.UserKey, s.ID, domain.ReasonUserRevoked, domain.ActorUser)
			switch {
			case err == nil:
				n.Add(1)
			case errors.Is(err, domain.ErrSessionNotFound):
				// It ended meanwhile.
			default:
				return err
			}
			return nil
		})
	}
	err = g.Wait()
	return int(n.Load()), err
}
