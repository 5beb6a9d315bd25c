package audit

import (
	"crypto/sha256"
	"fmt"

	"github.com/sessionledger/sessionledger/integrity"
)

// Checkpoints checks a stream against the ledger's signed checkpoints, with
// the checkpoint keys alone (no secret): it folds every message into the
// running hash the ledger signs (integrity.Chain), verifies each checkpoint
// found in the stream, and, given a checkpoint the auditor kept from earlier,
// tells a truncated or rolled-back stream. Feed it every message in stream
// order (Scan), then ask Finish.
//
// It is a pass of its own, before the Verifier's: the Verifier needs to know
// which messages the ledger refused (listed by later checkpoints), so that a
// forged event does not show up as a break in its user's history.
type Checkpoints struct {
	keys    integrity.PublicKeys // nil: signatures cannot be checked
	trusted *integrity.Checkpoint

	chain    integrity.Chain
	hashes   []integrity.Chain // running hash after each sequence (index seq-1)
	lastData uint64            // the last sequence that is not a checkpoint
	data     []uint64          // messages that are not checkpoints, up to each sequence
	lastSeq  uint64
	found    int    // checkpoints in the stream
	valid    int    // of which signed by a trusted key and matching
	covered  uint64 // the highest sequence a valid checkpoint covers
	refused  map[uint64]uint64
	problems []Problem
}

// NewCheckpoints returns a checker. keys may be nil (then nothing about the
// checkpoints can be proven and Finish says so); trusted, if not nil, is a
// checkpoint kept from an earlier read of the same stream.
func NewCheckpoints(keys integrity.PublicKeys, trusted *integrity.Checkpoint) *Checkpoints {
	return &Checkpoints{keys: keys, trusted: trusted, refused: map[uint64]uint64{}}
}

func (c *Checkpoints) report(seq uint64, kind, format string, args ...any) {
	c.problems = append(c.problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// Scan folds one stored message.
func (c *Checkpoints) Scan(r Record) {
	n := uint64(0)
	if len(c.data) > 0 {
		n = c.data[len(c.data)-1]
	}
	for c.lastSeq+1 < r.Seq { // a gap: the Verifier reports it; keep indexes aligned
		c.lastSeq++
		c.hashes, c.data = append(c.hashes, c.chain), append(c.data, n)
	}
	c.lastSeq = r.Seq
	c.chain = c.chain.Next(r.Seq, sha256.Sum256(r.Data))
	c.hashes = append(c.hashes, c.chain)
	if r.Subject != integrity.CheckpointSubject {
		c.lastData = r.Seq
		c.data = append(c.data, n+1)
		return
	}
	c.data = append(c.data, n)
	c.found++
	cp, err := integrity.DecodeCheckpoint(r.Data)
	if err != nil {
		c.report(r.Seq, "checkpoint", "not a checkpoint: %v", err)
		return
	}
	if c.keys == nil {
		return
	}
	if err := c.keys.Verify(&cp); err != nil {
		c.report(r.Seq, "checkpoint", "%v: a forged checkpoint, or one signed with a key you were not given", err)
		return
	}
	if cp.Covers >= r.Seq {
		c.report(r.Seq, "tampered", "the checkpoint signed for sequence %d or later sits at sequence %d: messages before it were removed", cp.Covers+1, r.Seq)
		return
	}
	if got := c.at(cp.Covers); got != cp.Chain {
		c.report(cp.Covers, "tampered", "the messages in sequences %d to %d are not the ones the ledger signed in the checkpoint at sequence %d: events were forged, dropped, reordered or edited there, or the stream was rewritten", cp.From+1, cp.Covers, r.Seq)
		return
	}
	c.valid++
	c.covered = max(c.covered, cp.Covers)
	for _, s := range cp.Rejected {
		if s > cp.From && s <= cp.Covers {
			c.refused[s] = r.Seq
		}
	}
	if cp.RejectedOmitted > 0 {
		c.report(r.Seq, "refused", "%d more messages in sequences %d to %d were refused by the ledger than the checkpoint lists", cp.RejectedOmitted, cp.From+1, cp.Covers)
	}
}

func (c *Checkpoints) at(seq uint64) integrity.Chain {
	if seq == 0 {
		return integrity.Chain{}
	}
	if seq > uint64(len(c.hashes)) {
		return integrity.Chain{1} // no such sequence: never equal to a signed hash
	}
	return c.hashes[seq-1]
}

// Refused reports whether a valid checkpoint names seq as a message the
// ledger refused (not its history), and which checkpoint.
func (c *Checkpoints) Refused(seq uint64) (checkpointSeq uint64, refused bool) {
	checkpointSeq, refused = c.refused[seq]
	return checkpointSeq, refused
}

// Finish checks the kept checkpoint, if any, and returns the problems found.
// Messages after the newest valid checkpoint are not a problem (the ledger
// writes one about a second after writes; Summary counts them), but a
// stream with messages and no valid checkpoint at all is: nothing in it is
// proven, as after a rewrite that dropped the checkpoints.
func (c *Checkpoints) Finish() []Problem {
	if c.keys != nil && c.valid == 0 && c.lastSeq > 0 {
		c.report(c.lastSeq, "uncovered", "no valid checkpoint in %d messages: nothing proves that the ledger wrote them (a stream only seconds old, or one rewritten without its checkpoints)", c.lastSeq)
	}
	if t := c.trusted; t != nil && c.keys != nil {
		switch err := c.keys.Verify(t); {
		case err != nil:
			c.report(t.Covers, "checkpoint", "the checkpoint you kept does not verify: %v", err)
		case t.Covers > c.lastSeq:
			c.report(c.lastSeq, "truncated", "the stream ends at sequence %d, but the checkpoint you kept covers up to %d: events were removed from the end, or this is an older copy (rolled back)", c.lastSeq, t.Covers)
		case c.at(t.Covers) != t.Chain:
			c.report(t.Covers, "tampered", "the stream up to sequence %d is not the one the checkpoint you kept signed: it was rewritten", t.Covers)
		case c.covered < t.Covers:
			c.report(c.covered, "rolled back", "the newest valid checkpoint in the stream covers sequence %d, older than the one you kept (%d): checkpoints were removed or the stream rolled back", c.covered, t.Covers)
		}
	}
	return c.problems
}

// Summary says what the checkpoints prove, for the report's last line.
func (c *Checkpoints) Summary() string {
	switch {
	case c.keys == nil && c.found > 0:
		return fmt.Sprintf("%d checkpoints were not checked: without --checkpoint-keys nothing proves that the ledger wrote this stream, and a stream rewritten with recomputed digests would pass", c.found)
	case c.keys == nil:
		return "no checkpoint keys given and no checkpoints found: nothing proves that the ledger wrote this stream"
	case c.valid == 0:
		return fmt.Sprintf("no valid checkpoint: none of the %d messages is proven to be the ledger's", c.lastSeq)
	case c.covered < c.lastData:
		return fmt.Sprintf("%d valid checkpoints prove sequences 1 to %d; %d messages after sequence %d are not yet covered by a checkpoint", c.valid, c.covered, c.data[c.lastSeq-1]-c.data[c.covered-1], c.covered)
	}
	return fmt.Sprintf("%d valid checkpoints prove every message, up to sequence %d (later ones are checkpoints)", c.valid, c.covered)
}

// Covered is the highest sequence a valid checkpoint covers.
func (c *Checkpoints) Covered() uint64 { return c.covered }
