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
	// LastUserEvent returns the sequence and chain digest of the user's last
	// event; sequence 0 if there is none.
	LastUserEvent(ctx context.Context, userKey string) (seq uint64, digest [32]byte, err error)
	// LastSessionSeq returns the sequence of the session's last own event, 0 if none.
	LastSessionSeq(ctx context.Context, sessionID string) (uint64, error)
	// SessionEvents returns the session's own events in stream order (none
	// for an unknown session).
	SessionEvents(ctx context.Context, sessionID string) ([]Event, error)
	// UserEvents returns the user's user events (not its sessions' events)
	// after stream sequence afterSeq, in stream order.
	UserEvents(ctx context.Context, userKey string, afterSeq uint64) ([]Event, error)
}
