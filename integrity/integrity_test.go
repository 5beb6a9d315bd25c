package integrity_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionledger/sessionledger/integrity"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func mustKeys(t *testing.T, current string, keys map[string][]byte) *integrity.TagKeys {
	t.Helper()
	k, err := integrity.NewTagKeys(current, keys)
	if err != nil {
		t.Fatalf("NewTagKeys(%q): %v", current, err)
	}
	return k
}

// flipTag flips one bit of the MAC inside a tag (not of its base64 text,
// whose last character carries bits the decoder ignores).
func flipTag(t *testing.T, tag string, bit int) string {
	t.Helper()
	id, enc, ok := strings.Cut(tag, ".")
	if !ok {
		t.Fatalf("tag %q has no key id", tag)
	}
	sum, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	sum[bit/8] ^= 1 << (bit % 8)
	return id + "." + base64.RawURLEncoding.EncodeToString(sum)
}

func TestTagVerifiesAndRefusesEverythingElse(t *testing.T) {
	keys := mustKeys(t, "t1", map[string][]byte{"t1": key(1)})
	other := mustKeys(t, "t1", map[string][]byte{"t1": key(2)})    // same id, another key
	stranger := mustKeys(t, "t9", map[string][]byte{"t9": key(1)}) // same key bytes, an id this ledger lacks
	c := keys.Checker()
	digest := sha256.Sum256([]byte("stored bytes"))
	tag := keys.Tag(digest)
	if !strings.HasPrefix(tag, "t1.") {
		t.Fatalf("tag %q does not name its key", tag)
	}
	if err := c.Check(tag, digest); err != nil {
		t.Fatalf("genuine tag refused: %v", err)
	}
	if again := keys.Tag(digest); again != tag {
		t.Fatalf("tags are not deterministic: %q then %q", tag, again)
	}
	flipped := digest
	flipped[31] ^= 1
	_, enc, _ := strings.Cut(tag, ".")
	for _, tc := range []struct {
		name   string
		tag    string
		digest [32]byte
		want   error
	}{
		{"flipped bit in the digest", tag, flipped, integrity.ErrBadTag},
		{"tag of other bytes", keys.Tag(sha256.Sum256([]byte("other bytes"))), digest, integrity.ErrBadTag},
		{"flipped first bit of the tag", flipTag(t, tag, 0), digest, integrity.ErrBadTag},
		{"flipped last bit of the tag", flipTag(t, tag, 255), digest, integrity.ErrBadTag},
		{"another key with the same id", other.Tag(digest), digest, integrity.ErrBadTag},
		{"unknown key id", stranger.Tag(digest), digest, integrity.ErrUnknownKey},
		{"empty", "", digest, integrity.ErrNoTag},
		{"no key id", enc, digest, integrity.ErrBadTag},
		{"empty key id", "." + enc, digest, integrity.ErrUnknownKey},
		{"only a key id", "t1.", digest, integrity.ErrBadTag},
		{"MAC too short", "t1." + enc[:len(enc)-1], digest, integrity.ErrBadTag},
		{"MAC too long", tag + "A", digest, integrity.ErrBadTag},
		{"MAC not base64url", "t1." + strings.Repeat("*", len(enc)), digest, integrity.ErrBadTag},
		{"standard base64 alphabet", "t1." + base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), digest, integrity.ErrBadTag},
		{"padded", tag + "=", digest, integrity.ErrBadTag},
		{"space", " " + tag, digest, integrity.ErrUnknownKey},
	} {
		if err := c.Check(tc.tag, tc.digest); !errors.Is(err, tc.want) {
			t.Errorf("%s: Check = %v, want %v", tc.name, err, tc.want)
		}
	}
	// The checker keeps a MAC per key between calls: a refusal leaves it
	// working.
	if err := c.Check(tag, digest); err != nil {
		t.Fatalf("genuine tag refused after refusals: %v", err)
	}
	// The other ledger's checker refuses this ledger's tags the same way.
	if err := other.Checker().Check(tag, digest); !errors.Is(err, integrity.ErrBadTag) {
		t.Fatalf("another ledger's keys accept this ledger's tag: %v", err)
	}
}

func TestOlderKeysStillVerify(t *testing.T) {
	old := mustKeys(t, "k1", map[string][]byte{"k1": key(1)})
	rotated := mustKeys(t, "k2", map[string][]byte{"k1": key(1), "k2": key(2)})
	if rotated.Current() != "k2" {
		t.Fatalf("Current() = %q, want k2", rotated.Current())
	}
	d1, d2 := sha256.Sum256([]byte("before the rotation")), sha256.Sum256([]byte("after it"))
	oldTag, newTag := old.Tag(d1), rotated.Tag(d2)
	if !strings.HasPrefix(newTag, "k2.") {
		t.Fatalf("new events are tagged %q, want the current key k2", newTag)
	}
	c := rotated.Checker()
	if err := c.Check(oldTag, d1); err != nil {
		t.Fatalf("an event tagged with the older key is refused after the rotation: %v", err)
	}
	if err := c.Check(newTag, d2); err != nil {
		t.Fatalf("an event tagged with the current key is refused: %v", err)
	}
	if err := c.Check(oldTag, d2); !errors.Is(err, integrity.ErrBadTag) {
		t.Fatalf("old tag on other bytes: %v", err)
	}
	// The old key's tag is not valid under the new key's id.
	_, enc, _ := strings.Cut(oldTag, ".")
	if err := c.Check("k2."+enc, d1); !errors.Is(err, integrity.ErrBadTag) {
		t.Fatalf("old MAC relabelled with the new key id: %v", err)
	}
	// Before the rotation, the new key is unknown.
	if err := old.Checker().Check(newTag, d2); !errors.Is(err, integrity.ErrUnknownKey) {
		t.Fatalf("a ledger without k2 checking a k2 tag: %v", err)
	}
	// Snapshots sealed before the rotation still open after it.
	sealed := old.Seal([]byte("snapshot"))
	if got, err := rotated.Open(sealed); err != nil || string(got) != "snapshot" {
		t.Fatalf("a snapshot sealed with the older key: %q, %v", got, err)
	}
}

func TestNewTagKeysRefusesBadKeys(t *testing.T) {
	for name, tc := range map[string]struct {
		current string
		keys    map[string][]byte
	}{
		"short key":              {"k", map[string][]byte{"k": key(1)[:31]}},
		"short older key":        {"k", map[string][]byte{"k": key(1), "old": []byte("short")}},
		"id with a dot":          {"k.1", map[string][]byte{"k.1": key(1)}},
		"older id with a dot":    {"k", map[string][]byte{"k": key(1), "a.b": key(2)}},
		"id with a space":        {"k 1", map[string][]byte{"k 1": key(1)}},
		"empty id":               {"", map[string][]byte{"": key(1)}},
		"current not among keys": {"k2", map[string][]byte{"k1": key(1)}},
		"no keys":                {"k", nil},
	} {
		if k, err := integrity.NewTagKeys(tc.current, tc.keys); err == nil {
			t.Errorf("%s: NewTagKeys accepted it (%v)", name, k)
		}
	}
	if _, err := integrity.NewTagKeys("k", map[string][]byte{"k": key(1)}); err != nil {
		t.Fatalf("a 32-byte key: %v", err)
	}
}

func TestSealOpen(t *testing.T) {
	keys := mustKeys(t, "t1", map[string][]byte{"t1": key(1)})
	other := mustKeys(t, "t1", map[string][]byte{"t1": key(2)})
	stranger := mustKeys(t, "zz", map[string][]byte{"zz": key(1)})
	for _, data := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("snapshot body "), 1000)} {
		sealed := keys.Seal(append([]byte(nil), data...))
		got, err := keys.Open(sealed)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip of %d bytes: got %d bytes, %v", len(data), len(got), err)
		}
	}
	body := []byte("SLSNAP the projection's state")
	sealed := keys.Seal(append([]byte(nil), body...))
	if len(sealed) != len(body)+len("t1")+1+sha256.Size {
		t.Fatalf("sealed length %d", len(sealed))
	}
	if !bytes.HasPrefix(sealed, body) {
		t.Fatal("Seal changed the data it authenticates")
	}
	bad := func(name string, b []byte, want error) {
		t.Helper()
		got, err := keys.Open(b)
		if err == nil || got != nil {
			t.Errorf("%s: Open = %q, %v; want a refusal", name, got, err)
			return
		}
		if want != nil && !errors.Is(err, want) {
			t.Errorf("%s: Open error %v, want %v", name, err, want)
		}
	}
	for i := range sealed {
		c := bytes.Clone(sealed)
		c[i] ^= 0x01
		bad("bit flipped at byte "+strconv.Itoa(i), c, nil)
	}
	for n := 0; n < len(sealed); n++ {
		bad("truncated to "+strconv.Itoa(n)+" bytes", sealed[:n], nil)
	}
	bad("a byte appended", append(bytes.Clone(sealed), 0), nil)
	bad("a byte prepended", append([]byte{0}, sealed...), nil)
	bad("sealed with another key of the same id", other.Seal(bytes.Clone(body)), integrity.ErrBadTag)
	bad("sealed with a key id this ledger lacks", stranger.Seal(bytes.Clone(body)), integrity.ErrUnknownKey)
	// The key id's length byte moved so that the id swallows a byte of the
	// data: the MAC input is the same, but the id is not one of the keys.
	shifted := bytes.Clone(sealed)
	shifted[len(body)+len("t1")]++
	bad("key id boundary moved", shifted, nil)
	zeroID := bytes.Clone(sealed)
	zeroID[len(body)+len("t1")] = 0
	bad("zero-length key id", zeroID, integrity.ErrBadTag)
	hugeID := bytes.Clone(sealed)
	hugeID[len(body)+len("t1")] = 0xff
	bad("key id length past the start", hugeID[len(hugeID)-sha256.Size-1-3:], integrity.ErrBadTag)
	// An unkeyed checksum in place of the seal.
	sum := sha256.Sum256(body)
	bad("unkeyed checksum", append(append(bytes.Clone(body), "t1\x02"...), sum[:]...), integrity.ErrBadTag)
}

func TestOpenResultCannotOverwriteTheSealedBuffer(t *testing.T) {
	keys := mustKeys(t, "t1", map[string][]byte{"t1": key(1)})
	sealed := keys.Seal([]byte("data"))
	orig := bytes.Clone(sealed)
	got, err := keys.Open(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if cap(got) != len(got) {
		t.Fatalf("Open returned a slice with capacity %d for %d bytes: appending to it writes over the seal", cap(got), len(got))
	}
	_ = append(got, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"...)
	if !bytes.Equal(sealed, orig) {
		t.Fatal("appending to Open's result changed the sealed buffer")
	}
	if again, err := keys.Open(sealed); err != nil || string(again) != "data" {
		t.Fatalf("the sealed buffer no longer opens after the caller appended: %q, %v", again, err)
	}
}

func TestChain(t *testing.T) {
	d := func(s string) [32]byte { return sha256.Sum256([]byte(s)) }
	var zero integrity.Chain
	a := zero.Next(1, d("a")).Next(2, d("b")).Next(3, d("c"))
	if b := zero.Next(1, d("a")).Next(2, d("b")).Next(3, d("c")); a != b {
		t.Fatal("the running hash is not deterministic")
	}
	// The definition: SHA-256(previous || big-endian sequence || digest).
	var buf []byte
	buf = append(buf, zero[:]...)
	buf = binary.BigEndian.AppendUint64(buf, 1)
	da := d("a")
	buf = append(buf, da[:]...)
	if got, want := zero.Next(1, d("a")), integrity.Chain(sha256.Sum256(buf)); got != want {
		t.Fatalf("Next(1, a) = %s, want %s", got, want)
	}
	seen := map[integrity.Chain]string{a: "a1 b2 c3"}
	for name, c := range map[string]integrity.Chain{
		"reordered":           zero.Next(1, d("b")).Next(2, d("a")).Next(3, d("c")),
		"sequences swapped":   zero.Next(2, d("a")).Next(1, d("b")).Next(3, d("c")),
		"one sequence off":    zero.Next(1, d("a")).Next(2, d("b")).Next(4, d("c")),
		"one message edited":  zero.Next(1, d("a")).Next(2, d("B")).Next(3, d("c")),
		"one message missing": zero.Next(1, d("a")).Next(3, d("c")),
		"one message more":    zero.Next(1, d("a")).Next(2, d("b")).Next(3, d("c")).Next(4, d("d")),
		"another start":       integrity.Chain(d("x")).Next(1, d("a")).Next(2, d("b")).Next(3, d("c")),
		"empty":               zero,
	} {
		if prev, dup := seen[c]; dup {
			t.Errorf("%s hashes like %s", name, prev)
		}
		seen[c] = name
	}
	text, err := a.MarshalText()
	if err != nil || string(text) != a.String() || len(text) != 43 {
		t.Fatalf("MarshalText = %q, %v", text, err)
	}
	var back integrity.Chain
	if err := back.UnmarshalText(text); err != nil || back != a {
		t.Fatalf("UnmarshalText(MarshalText) = %s, %v", back, err)
	}
	for _, bad := range []string{"", "AAAA", a.String()[:42], base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)), a.String() + "="} {
		if err := back.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
	}
}

// noPanic runs f and turns a panic into an error.
func noPanic(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panicked: %v", r)
		}
	}()
	return f()
}

// A chain hash longer than 32 bytes (in a checkpoint anyone with write access
// to the stream can put on ledger.checkpoint, or in the file an auditor
// keeps) must be an error, not a panic of the auditor.
func TestChainUnmarshalTextRefusesLongInput(t *testing.T) {
	var c integrity.Chain
	full := c.Next(1, sha256.Sum256([]byte("x"))).String()
	for _, bad := range []string{full + "A", full + "AAAA", strings.Repeat("A", 64)} {
		var back integrity.Chain
		if err := noPanic(func() error {
			if back.UnmarshalText([]byte(bad)) == nil {
				return errors.New("accepted")
			}
			return nil
		}); err != nil {
			t.Errorf("UnmarshalText of %d characters: %v", len(bad), err)
		}
	}
	ck, _ := checkpointKey(t, "c1", 1)
	cp := sampleCheckpoint()
	ck.Sign(&cp)
	good, _ := cp.Encode()
	stored := bytes.Replace(good, []byte(`"chain":"`+cp.Chain.String()+`"`), []byte(`"chain":"`+cp.Chain.String()+`A"`), 1)
	if err := noPanic(func() error {
		if _, err := integrity.DecodeCheckpoint(stored); err == nil {
			return errors.New("decoded")
		}
		return nil
	}); err != nil {
		t.Errorf("DecodeCheckpoint of a checkpoint with a 44-character chain: %v", err)
	}
}

func checkpointKey(t *testing.T, id string, seed byte) (integrity.CheckpointKey, ed25519.PublicKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return integrity.CheckpointKey{ID: id, Private: priv}, priv.Public().(ed25519.PublicKey)
}

func sampleCheckpoint() integrity.Checkpoint {
	var chain integrity.Chain
	chain = chain.Next(5, sha256.Sum256([]byte("x")))
	return integrity.Checkpoint{From: 4, Covers: 9, Chain: chain, Rejected: []uint64{6, 8}, RejectedOmitted: 2,
		Time: time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)}
}

func TestCheckpointSignVerify(t *testing.T) {
	ck, pub := checkpointKey(t, "c1", 1)
	_, otherPub := checkpointKey(t, "c2", 2)
	// c1-alias holds the same public key: only the signed key id tells
	// the two apart.
	trusted := integrity.PublicKeys{"c1": pub, "c1-alias": pub, "c2": otherPub}
	c := sampleCheckpoint()
	ck.Sign(&c)
	if c.KeyID != "c1" || c.Signature == "" {
		t.Fatalf("Sign left key id %q, signature %q", c.KeyID, c.Signature)
	}
	if err := trusted.Verify(&c); err != nil {
		t.Fatalf("genuine checkpoint refused: %v", err)
	}
	// Seq is where it is stored, not signed.
	stored := c
	stored.Seq = 10
	if err := trusted.Verify(&stored); err != nil {
		t.Fatalf("a checkpoint with its stored sequence set: %v", err)
	}
	// Through its stored form.
	b, err := stored.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"seq"`)) {
		t.Fatalf("the stored form carries its own sequence: %s", b)
	}
	back, err := integrity.DecodeCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := trusted.Verify(&back); err != nil {
		t.Fatalf("decoded checkpoint refused: %v", err)
	}
	if back.Covers != c.Covers || back.From != c.From || back.Chain != c.Chain || !back.Time.Equal(c.Time) {
		t.Fatalf("decoded %+v, want %+v", back, c)
	}

	for name, mut := range map[string]func(*integrity.Checkpoint){
		"From":                   func(c *integrity.Checkpoint) { c.From++ },
		"Covers":                 func(c *integrity.Checkpoint) { c.Covers++ },
		"Chain":                  func(c *integrity.Checkpoint) { c.Chain[0] ^= 1 },
		"Rejected: one more":     func(c *integrity.Checkpoint) { c.Rejected = append(c.Rejected, 9) },
		"Rejected: one less":     func(c *integrity.Checkpoint) { c.Rejected = c.Rejected[:1] },
		"Rejected: other":        func(c *integrity.Checkpoint) { c.Rejected = []uint64{6, 7} },
		"Rejected: none":         func(c *integrity.Checkpoint) { c.Rejected = nil },
		"Rejected: one omitted":  func(c *integrity.Checkpoint) { c.Rejected, c.RejectedOmitted = c.Rejected[:1], c.RejectedOmitted+1 },
		"RejectedOmitted":        func(c *integrity.Checkpoint) { c.RejectedOmitted = 0 },
		"Time":                   func(c *integrity.Checkpoint) { c.Time = c.Time.Add(time.Nanosecond) },
		"KeyID (same key bytes)": func(c *integrity.Checkpoint) { c.KeyID = "c1-alias" },
		"KeyID (other key)":      func(c *integrity.Checkpoint) { c.KeyID = "c2" },
		"Signature":              func(c *integrity.Checkpoint) { c.Signature = flipSig(c.Signature) },
		"Signature not base64":   func(c *integrity.Checkpoint) { c.Signature = "!" + c.Signature[1:] },
		"Signature empty":        func(c *integrity.Checkpoint) { c.Signature = "" },
	} {
		m := c
		m.Rejected = append([]uint64(nil), c.Rejected...)
		mut(&m)
		if err := trusted.Verify(&m); err == nil {
			t.Errorf("changed %s: the signature still verifies", name)
		}
	}
	// Signed by a key the auditor does not trust.
	unknown, _ := checkpointKey(t, "c9", 9)
	u := sampleCheckpoint()
	unknown.Sign(&u)
	if err := trusted.Verify(&u); err == nil || !strings.Contains(err.Error(), "not among the trusted keys") {
		t.Fatalf("checkpoint signed by an unknown key: %v", err)
	}
	// A key id the auditor trusts, but the signature is another key's.
	impostor := integrity.CheckpointKey{ID: "c1", Private: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))}
	f := sampleCheckpoint()
	impostor.Sign(&f)
	if err := trusted.Verify(&f); err == nil {
		t.Fatal("a checkpoint signed by another key under a trusted id verifies")
	}
}

func flipSig(s string) string {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	b[0] ^= 1
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestDecodeCheckpointRefusesIncomplete(t *testing.T) {
	ck, _ := checkpointKey(t, "c1", 1)
	c := sampleCheckpoint()
	ck.Sign(&c)
	good, _ := c.Encode()
	for name, b := range map[string][]byte{
		"not JSON":        []byte("junk"),
		"no key id":       bytes.Replace(good, []byte(`"kid":"c1"`), []byte(`"kid":""`), 1),
		"no signature":    bytes.Replace(good, []byte(`"sig":"`+c.Signature+`"`), []byte(`"sig":""`), 1),
		"covers < from":   bytes.Replace(good, []byte(`"covers_seq":9`), []byte(`"covers_seq":3`), 1),
		"chain too short": bytes.Replace(good, []byte(`"chain":"`+c.Chain.String()+`"`), []byte(`"chain":"AAAA"`), 1),
	} {
		if bytes.Equal(b, good) {
			t.Fatalf("%s: the test did not change the checkpoint", name)
		}
		if _, err := integrity.DecodeCheckpoint(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestPublicKeysJWKS(t *testing.T) {
	_, p1 := checkpointKey(t, "c1", 1)
	_, p2 := checkpointKey(t, "c2", 2)
	pk := integrity.PublicKeys{"c1": p1, "c2": p2}
	b, err := json.Marshal(pk)
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) != 2 {
		t.Fatalf("not a JWK Set of two keys: %s (%v)", b, err)
	}
	for _, k := range set.Keys {
		if k["kty"] != "OKP" || k["crv"] != "Ed25519" || k["alg"] != "EdDSA" || k["use"] != "sig" || k["kid"] == "" {
			t.Fatalf("JWK %v", k)
		}
	}
	back, err := integrity.ParsePublicKeys(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || !back["c1"].Equal(p1) || !back["c2"].Equal(p2) {
		t.Fatalf("round trip: %v", back)
	}
	// The parsed keys verify what the private keys signed.
	ck, _ := checkpointKey(t, "c2", 2)
	c := sampleCheckpoint()
	ck.Sign(&c)
	if err := back.Verify(&c); err != nil {
		t.Fatalf("parsed keys: %v", err)
	}
	if empty, err := json.Marshal(integrity.PublicKeys{}); err != nil || string(empty) != `{"keys":[]}` {
		t.Fatalf("no keys: %s, %v", empty, err)
	}

	x := base64.RawURLEncoding.EncodeToString(p1)
	jwk := func(fields string) []byte { return []byte(`{"keys":[{` + fields + `}]}`) }
	if got, err := integrity.ParsePublicKeys(jwk(`"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"k"`)); err != nil || !got["k"].Equal(p1) {
		t.Fatalf("a minimal Ed25519 JWK: %v, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"RSA key":            jwk(`"kty":"RSA","n":"AQAB","e":"AQAB","kid":"k"`),
		"EC P-256 key":       jwk(`"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + x + `","kid":"k"`),
		"X25519 key":         jwk(`"kty":"OKP","crv":"X25519","x":"` + x + `","kid":"k"`),
		"symmetric key":      jwk(`"kty":"oct","k":"` + x + `","kid":"k"`),
		"no kid":             jwk(`"kty":"OKP","crv":"Ed25519","x":"` + x + `"`),
		"short x":            jwk(`"kty":"OKP","crv":"Ed25519","x":"` + x[:40] + `","kid":"k"`),
		"long x":             jwk(`"kty":"OKP","crv":"Ed25519","x":"` + x + `AAAA","kid":"k"`),
		"x not base64url":    jwk(`"kty":"OKP","crv":"Ed25519","x":"` + strings.Repeat("*", len(x)) + `","kid":"k"`),
		"one good, one RSA":  []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"a"},{"kty":"RSA","kid":"b"}]}`),
		"empty set":          []byte(`{"keys":[]}`),
		"no keys member":     []byte(`{}`),
		"not JSON":           []byte(`junk`),
		"keys is not a list": []byte(`{"keys":{"kty":"OKP"}}`),
	} {
		if got, err := integrity.ParsePublicKeys(b); err == nil {
			t.Errorf("%s: parsed %v", name, got)
		}
	}
}
