package bench

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestProcessCPUMatchesRusage(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: server CPU is read on Linux only")
	}
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
	}
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	lo := rusage()
	got, err := ProcessCPU(os.Getpid())
	hi := rusage()
	if err != nil {
		t.Fatal(err)
	}
	// Ticks are 10 ms; rusage counts in microseconds.
	if got < lo-20*time.Millisecond || got > hi+20*time.Millisecond {
		t.Fatalf("ProcessCPU = %v, getrusage %v – %v", got, lo, hi)
	}
}
