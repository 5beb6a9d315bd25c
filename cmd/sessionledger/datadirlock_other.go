//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// tryLockFile creates path, failing if it exists: without flock, the lock is
// the file's existence. A holder that crashed leaves it behind (see
// staleLockHint).
func tryLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, errDataDirLocked
	}
	return f, err
}

// unlockFile removes the lock file.
func unlockFile(f *os.File) error {
	f.Close()
	return os.Remove(f.Name())
}

func staleLockHint(path string) string {
	return fmt.Sprintf("; if it is not running any more (it crashed), remove %s", path)
}
