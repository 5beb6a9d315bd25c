// Package poll is the tests' one way to wait for a condition: check it every
// few milliseconds until it holds or a deadline passes (nats-server's
// checkFor), instead of sleeping for a guessed time.
package poll

import (
	"errors"
	"testing"
	"time"
)

// Interval is how often Until checks.
const Interval = 5 * time.Millisecond

// Until calls check until it returns nil, and fails the test with check's
// last error if timeout passes first.
func Until(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	Every(tb, Interval, timeout, check)
}

// Every is Until checking every interval instead of every Interval; 0
// checks again at once, for a benchmark that measures how soon the condition
// holds.
func Every(tb testing.TB, interval, timeout time.Duration, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// For is Until for a condition that says what is wrong only when asked: it
// waits until cond holds and fails the test with msg() if timeout passes.
func For(tb testing.TB, timeout time.Duration, cond func() bool, msg func() string) {
	tb.Helper()
	Until(tb, timeout, func() error {
		if cond() {
			return nil
		}
		return errors.New(msg())
	})
}
