package integrity

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sessionledger/sessionledger/jwk"
)

// CheckpointSubject is where the ledger appends its checkpoints, in the
// stream next to the events (they are folded into the running hash like
// every message).
const CheckpointSubject = "ledger.checkpoint"

// MaxRejectedListed bounds the refused sequences a checkpoint lists; more are
// only counted (RejectedOmitted), and an auditor then vouches for none of the
// range's unlisted messages it cannot tell apart.
const MaxRejectedListed = 10_000

// Checkpoint commits to the stream up to sequence Covers: Chain is the running
// hash there. Rejected lists the sequences after From, up to Covers, that the
// ledger refused to apply (a bad or missing tag, a subject that does not match
// the event, an event out of place): messages in the stream that are not the
// ledger's history. Signed by a checkpoint key (Ed25519) named by KeyID.
type Checkpoint struct {
	From            uint64    `json:"from_seq"`
	Covers          uint64    `json:"covers_seq"`
	Chain           Chain     `json:"chain"`
	Rejected        []uint64  `json:"rejected,omitempty"`
	RejectedOmitted uint64    `json:"rejected_omitted,omitempty"`
	Time            time.Time `json:"time"`
	KeyID           string    `json:"kid"`
	Signature       string    `json:"sig"`
	// Seq is where the checkpoint itself is stored; set when read from the
	// stream, not signed.
	Seq uint64 `json:"seq,omitempty"`
}

// signedBytes is what the signature covers: every field but the signature
// and Seq, in a fixed binary form.
func (c *Checkpoint) signedBytes() []byte {
	b := []byte("sessionledger checkpoint v1\x00")
	b = binary.BigEndian.AppendUint64(b, c.From)
	b = binary.BigEndian.AppendUint64(b, c.Covers)
	b = append(b, c.Chain[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(c.Rejected)))
	for _, s := range c.Rejected {
		b = binary.BigEndian.AppendUint64(b, s)
	}
	b = binary.BigEndian.AppendUint64(b, c.RejectedOmitted)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Time.UnixNano()))
	b = append(b, c.KeyID...)
	return b
}

// CheckpointKey signs checkpoints.
type CheckpointKey struct {
	ID      string
	Private ed25519.PrivateKey
}

// Sign sets KeyID and Signature.
func (k CheckpointKey) Sign(c *Checkpoint) {
	c.KeyID = k.ID
	c.Signature = base64.RawURLEncoding.EncodeToString(ed25519.Sign(k.Private, c.signedBytes()))
}

// Encode returns the checkpoint as stored in the stream (JSON).
func (c *Checkpoint) Encode() ([]byte, error) {
	cc := *c
	cc.Seq = 0
	return json.Marshal(cc)
}

// DecodeCheckpoint parses a stored checkpoint; it does not check the signature.
func DecodeCheckpoint(b []byte) (Checkpoint, error) {
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("integrity: checkpoint: %w", err)
	}
	if c.KeyID == "" || c.Signature == "" || c.Covers < c.From {
		return c, errors.New("integrity: checkpoint is incomplete")
	}
	return c, nil
}

// PublicKeys are the checkpoint keys an auditor trusts, by key id.
type PublicKeys map[string]ed25519.PublicKey

// Verify checks the checkpoint's signature.
func (pk PublicKeys) Verify(c *Checkpoint) error {
	key, ok := pk[c.KeyID]
	if !ok {
		return fmt.Errorf("integrity: checkpoint signed by key %q, which is not among the trusted keys", c.KeyID)
	}
	sig, err := base64.RawURLEncoding.DecodeString(c.Signature)
	if err != nil || !ed25519.Verify(key, c.signedBytes(), sig) {
		return errors.New("integrity: checkpoint signature does not verify")
	}
	return nil
}

// MarshalJSON writes the keys as a JWK Set.
func (pk PublicKeys) MarshalJSON() ([]byte, error) {
	set := jwk.Set{Keys: []jwk.Key{}}
	for id, k := range pk {
		set.Keys = append(set.Keys, jwk.Ed25519(id, k))
	}
	return json.Marshal(set)
}

// ParsePublicKeys reads a JWK Set of Ed25519 keys (what the ledger serves at
// /.well-known/ledger-checkpoint-keys.json). Any other key in it is an error:
// an auditor's key file should hold nothing else.
func ParsePublicKeys(b []byte) (PublicKeys, error) {
	var set jwk.Set
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("integrity: checkpoint keys are not a JWK Set: %w", err)
	}
	keys := set.Ed25519Keys()
	if len(keys) != len(set.Keys) {
		return nil, errors.New("integrity: the checkpoint keys hold a key that is not an Ed25519 signing JWK with a kid")
	}
	if len(keys) == 0 {
		return nil, errors.New("integrity: no checkpoint keys")
	}
	return PublicKeys(keys), nil
}
