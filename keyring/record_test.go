package keyring

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func testCipher(t testing.TB, b byte) *Cipher {
	t.Helper()
	c, err := NewCipher(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRecordsOpenOnlyAsWritten: a record opens with the keyring key it was
// sealed with, under its own name, unaltered; the stored bytes never hold
// the secret.
func TestRecordsOpenOnlyAsWritten(t *testing.T) {
	c := testCipher(t, 1)
	now := time.Now()
	rec := Record{Kind: Tag, Gen: 3, ID: "tabc", Created: now, ActivateAt: now.Add(10 * time.Second), Secret: bytes.Repeat([]byte("s3cr3t!!"), 4)}
	b, err := c.Seal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, rec.Secret) || bytes.Contains(b, []byte("czNjcjN0ISE")) {
		t.Fatalf("the stored record holds the secret: %s", b)
	}
	got, err := c.Open(rec.Name(), b)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if got.ID != rec.ID || !bytes.Equal(got.Secret, rec.Secret) || !got.ActivateAt.Equal(rec.ActivateAt) {
		t.Fatalf("got %+v, want %+v", got, rec)
	}

	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	alter := func(field string, v any) []byte {
		c := map[string]any{}
		for k, x := range m {
			c[k] = x
		}
		c[field] = v
		out, _ := json.Marshal(c)
		return out
	}
	for name, tc := range map[string]struct {
		name string
		data []byte
		c    *Cipher
	}{
		"activation moved earlier": {rec.Name(), alter("activate_at", now.Add(-time.Hour).UTC().Format(time.RFC3339Nano)), c},
		"id changed":               {rec.Name(), alter("id", "tother"), c},
		"retire delay shortened":   {rec.Name(), alter("retire_after", 1), c},
		"moved to another name":    {"tag.0000000004", b, c},
		"another ledger's key":     {rec.Name(), b, testCipher(t, 2)},
		"generation 0 name":        {"tag.0000000000", b, c},
		"unknown kind":             {"nope.0000000003", b, c},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tc.c.Open(tc.name, tc.data)
			if err == nil {
				t.Fatal("opened")
			}
			if strings.Contains(err.Error(), string(rec.Secret)) {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}

func at(s int) time.Time { return time.Unix(1_800_000_000+int64(s), 0).UTC() }

// TestSigningSchedule: a key is published from its record on, signs from
// its activation until the next one's, and leaves the JWKS retireAfter
// later; one that never signed leaves when its replacement activates.
func TestSigningSchedule(t *testing.T) {
	recs := []Record{
		{Kind: Signing, Gen: 0, ID: "k0"},
		{Kind: Signing, Gen: 1, ID: "k1", Created: at(100), ActivateAt: at(110)},
		{Kind: Signing, Gen: 2, ID: "k2", Created: at(150), ActivateAt: at(160)},
	}
	const retire = 30 * time.Second
	ids := func(rs []Record) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		now       int
		active    string
		published string
		next      int
	}{
		{105, "k0", "k0,k1,k2", 110},
		{110, "k1", "k0,k1,k2", 140},
		{139, "k1", "k0,k1,k2", 140},
		{140, "k1", "k1,k2", 160},
		{160, "k2", "k1,k2", 190},
		{190, "k2", "k2", 0},
	} {
		pub, next := Published(recs, retire, at(tc.now))
		if got := Active(recs, at(tc.now)).ID; got != tc.active {
			t.Errorf("at %d: active %s, want %s", tc.now, got, tc.active)
		}
		if got := ids(pub); got != tc.published {
			t.Errorf("at %d: published %s, want %s", tc.now, got, tc.published)
		}
		want := time.Time{}
		if tc.next != 0 {
			want = at(tc.next)
		}
		if !next.Equal(want) {
			t.Errorf("at %d: next change %v, want %v", tc.now, next, want)
		}
	}

	// A key made by an instance with a longer access-token lifetime retires
	// by it, on an instance with a shorter one too.
	longer := []Record{{Kind: Signing, Gen: 0, ID: "k0"}, {Kind: Signing, Gen: 1, ID: "k1", Created: at(100), ActivateAt: at(110), RetireAfter: time.Hour}}
	if pub, _ := Published(longer, retire, at(110).Add(30*time.Minute)); ids(pub) != "k0,k1" {
		t.Errorf("half an hour after k1 took over with a recorded retire delay of an hour: published %s, want k0,k1", ids(pub))
	}
}
