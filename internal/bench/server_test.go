package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 250 and 50 ticks here.
	tail := " S 1 2 3 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 123 4567 89"
	for _, tc := range []struct {
		stat string
		want time.Duration
		ok   bool
	}{
		{"4242 (sessionledger)" + tail, 3 * time.Second, true},
		{"4242 (a b) c))" + tail, 3 * time.Second, true}, // a command name may hold spaces and parentheses
		{"4242 (sessionledger) S 1 2", 0, false},
		{"4242 sessionledger" + tail, 0, false},
		{"4242 (sessionledger)" + strings.Replace(tail, " 250 ", " x ", 1), 0, false},
	} {
		got, err := parseStatCPU(tc.stat)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStatCPU(%q) = %v, %v; want %v, ok %v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
}
