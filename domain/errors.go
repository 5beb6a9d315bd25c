package domain

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is; transport maps them to
// HTTP statuses and OAuth error codes in one table.
var (
	ErrTokenMalformed   = errors.New("refresh token is malformed")
	ErrTokenUnknown     = errors.New("refresh token is not valid for any live session")
	ErrTokenReused      = errors.New("refresh token was already used; the session is revoked")
	ErrSessionNotFound  = errors.New("no live session with that id")
	ErrSessionEnded     = errors.New("session has ended")
	ErrSessionExpired   = errors.New("session has expired")
	ErrUserDeactivated  = errors.New("user is deactivated")
	ErrInvalidInput     = errors.New("invalid input")
	ErrConflict         = errors.New("concurrent write to the same session or user")
	ErrUnavailable      = errors.New("ledger is unavailable")
	ErrProjectionFailed = errors.New("projection stopped")
	// ErrUndecodable marks a stored message that the ledger wrote (its tag
	// is valid) but this version cannot decode, written by a newer version: a
	// projection must stop there, since skipping it would lose state
	// silently. A message without a valid tag is refused instead (Record).
	ErrUndecodable = errors.New("undecodable event in the stream")
	// ErrHistoryLost: the stream has vanished, was replaced, or lost events
	// that this instance, its snapshots or its data dir know existed. The
	// ledger refuses to serve rather than start again from nothing.
	ErrHistoryLost = errors.New("the ledger's history is gone or was replaced")
)

// ValidationError says which input field is wrong and why. It matches
// ErrInvalidInput.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidInput) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidInput }

// ConflictError is the error of an append that another write came before:
// Last is the sequence of the last message under the event's expectation
// subjects, which the next attempt must have applied and expect. It
// matches ErrConflict.
type ConflictError struct {
	Last uint64
	Err  error // the store's detail
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%v (the last message there is at sequence %d): %v", ErrConflict, e.Last, e.Err)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Unwrap returns the store's detail.
func (e *ConflictError) Unwrap() error { return e.Err }
