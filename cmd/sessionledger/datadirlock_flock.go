//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// tryLockFile opens path and takes an exclusive flock on it without waiting.
// The kernel drops the lock when the process ends, however it ends: a holder
// killed with SIGKILL leaves nothing to clean up. flock locks belong to the
// open file, so two Mains in one process exclude each other too.
func tryLockFile(path string) (*os.File, error) {
	// Not through a symlink: release truncates the file, which must be
	// the lock file itself and nothing it points to.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errDataDirLocked
		}
		return nil, err
	}
	return f, nil
}

// unlockFile releases the lock. The file is not removed: a serve that opened
// it a moment before would lock the removed file while a third created and
// locked a new one, and both would run.
func unlockFile(f *os.File) error {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return f.Close()
}

func staleLockHint(string) string { return "" }
