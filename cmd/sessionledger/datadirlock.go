package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// With the embedded NATS, the data dir holds the JetStream store, which one
// nats-server at a time may open: a second ledger on it would append to the
// same files. serve takes a lock on dataDirLockFile before it opens the store
// and keeps it until Close; a second serve on the dir is refused at once,
// told who holds it. With --nats-url the dir only holds keys, which
// instances may share, and nothing is locked.
const dataDirLockFile = "serve.lock"

// errDataDirLocked: another process holds the lock.
var errDataDirLocked = errors.New("data dir locked")

// dataDirHolder is what the lock file says about the serve holding it.
type dataDirHolder struct {
	PID   int       `json:"pid"`
	Host  string    `json:"host"`
	Since time.Time `json:"since"`
	HTTP  string    `json:"http"`
}

// dataDirLock is a held lock on a data dir.
type dataDirLock struct {
	dir string
	f   *os.File
}

// lockDataDir takes the lock on dir (creating dir if need be), or says who
// holds it.
func lockDataDir(dir string) (*dataDirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, dataDirLockFile)
	f, err := tryLockFile(path)
	if errors.Is(err, errDataDirLocked) {
		return nil, dataDirInUse(dir, path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock the data dir: %w", err)
	}
	return &dataDirLock{dir: dir, f: f}, nil
}

// record writes who holds the lock into the lock file.
func (l *dataDirLock) record(h dataDirHolder) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("lock file: %w", err)
	}
	if _, err := l.f.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("lock file: %w", err)
	}
	return nil
}

// release gives the lock up. The file stays (see unlockFile), emptied: no
// one holds it.
func (l *dataDirLock) release() error {
	_ = l.f.Truncate(0)
	return unlockFile(l.f)
}

// dataDirInUse is the error for a data dir another serve holds, saying which.
func dataDirInUse(dir, path string) error {
	who := "it has not said who it is yet"
	b, err := os.ReadFile(path)
	var h dataDirHolder
	if err == nil && json.Unmarshal(b, &h) == nil && h.PID != 0 {
		who = fmt.Sprintf("pid %d on host %s, since %s, http %s", h.PID, h.Host, h.Since.Format(time.RFC3339), h.HTTP)
	}
	return fmt.Errorf("data dir %s is in use by another sessionledger serve (%s); stop it, or use another --data-dir%s", dir, who, staleLockHint(path))
}

// thisHolder describes this process, serving HTTP on httpAddr.
func thisHolder(httpAddr string) dataDirHolder {
	host, err := os.Hostname()
	if err != nil {
		host = "?"
	}
	return dataDirHolder{PID: os.Getpid(), Host: host, Since: time.Now().UTC().Truncate(time.Second), HTTP: httpAddr}
}
