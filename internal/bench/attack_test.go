package bench

import (
	"strings"
	"testing"

	"github.com/sessionledger/sessionledger/domain"
)

func TestForgedTokens(t *testing.T) {
	genuine := domain.RefreshToken{SessionID: "01JD0000000000000000000000", Generation: 3}
	live := domain.RefreshToken{SessionID: "01JD0000000000000000000001", Generation: 10_000}
	f, err := newForger(genuine.Encode(), live.Encode())
	if err != nil {
		t.Fatal(err)
	}
	a, b := f.forge(ForgedUnknown), f.forge(ForgedUnknown)
	ta, err := domain.ParseRefreshToken(a)
	if err != nil || a == b || ta.SessionID == genuine.SessionID || ta.Generation != genuine.Generation {
		t.Errorf("unknown: %q (%v), then %q: want a well-formed token of a new session each time", a, err, b)
	}
	old := f.forge(ForgedOldGeneration)
	to, err := domain.ParseRefreshToken(old)
	if err != nil || to.SessionID != live.SessionID || to.Generation != 0 || to.Secret == live.Secret || old == f.forge(ForgedOldGeneration) {
		t.Errorf("old-generation: %q (%v): want generation 0 of the live session with a random secret", old, err)
	}
	for kind, n := range map[string]int{ForgedGarbage: len(genuine.Encode()), ForgedGarbage4K: 4096} {
		g := f.forge(kind)
		if _, err := domain.ParseRefreshToken(g); len(g) != n || err == nil || strings.ContainsFunc(g, func(r rune) bool { return r < '!' || r > '~' }) {
			t.Errorf("%s: %q (parse: %v): want %d printable characters that do not parse", kind, g, err, n)
		}
	}
}
