package eventstore

import "context"

// LastUnder returns the sequence of the last message matching filter, for
// tests that append after messages the ledger did not write.
func (s *Store) LastUnder(ctx context.Context, filter string) (uint64, error) {
	return s.lastSeqFor(ctx, filter)
}
