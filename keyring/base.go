package keyring

import (
	"encoding/json"
	"errors"
	"github.com/sessionledger/sessionledger/accesstoken"
	"github.com/sessionledger/sessionledger/secrets"
)

// BaseRecords returns generation 0 of each kind: the keys of keys.json,
// active from the start.
func BaseRecords(s *secrets.Set) ([]Record, error) {
	signing := accesstoken.NewEd25519Key(s.SigningKey)
	der, err := signing.MarshalPrivate()
	if err != nil {
		return nil, err
	}
	token, err := encodeTokenKeys(s.DigestKey, s.SuccessorKey)
	if err != nil {
		return nil, err
	}
	return []Record{
		{Kind: Signing, ID: signing.ID, Alg: signing.Alg(), Secret: der},
		{Kind: Token, ID: s.DigestKeyID, Secret: token},
		{Kind: Tag, ID: s.TagKeyID, Secret: s.TagKey},
		{Kind: Checkpoint, ID: s.CheckpointKeyID, Secret: s.CheckpointKey.Seed()},
	}, nil
}

// tokenSecret is the material of a refresh-token key.
type tokenSecret struct {
	DigestKey    []byte `json:"digest_key"`
	SuccessorKey []byte `json:"successor_key"`
}

func encodeTokenKeys(digest, successor []byte) ([]byte, error) {
	return json.Marshal(tokenSecret{digest, successor})
}

func decodeTokenKeys(b []byte) (digest, successor []byte, err error) {
	var t tokenSecret
	if json.Unmarshal(b, &t) != nil || len(t.DigestKey) < 32 || len(t.SuccessorKey) < 32 {
		return nil, nil, errors.New("keyring: token record does not hold two keys of at least 32 bytes")
	}
	return t.DigestKey, t.SuccessorKey, nil
}
