//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package secrets

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f, waiting for another holder.
func lockFile(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }
