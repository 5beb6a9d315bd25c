package domain

import "context"

// EventStore is the ledger's source of truth: an append-only log with
// optimistic concurrency per user.
type EventStore interface {
	// Append stores e if the last stored event of e's user (session and user
	// events alike) has stream sequence expectedUserSeq (0: none). It returns
	// the new event's sequence, or an error matching ErrConflict when another
	// write came first.
	Append(ctx context.Context, e Event, expectedUserSeq uint64) (uint64, error)
	// LastUserSeq returns the sequence of the user's last event, 0 if none.
	LastUserSeq(ctx context.Context, userKey string) (uint64, error)
	// LastSessionSeq returns the sequence of the session's last own event, 0 if none.
	LastSessionSeq(ctx context.Context, sessionID string) (uint64, error)
	// SessionHistory returns the session's events, oldest first, followed by
	// the user event that ended it, if one did. ErrSessionNotFound if none.
	SessionHistory(ctx context.Context, sessionID string) ([]Event, error)
}
