//go:build unix

package secrets

import (
	"fmt"
	"os"
	"syscall"
)

// keepOwner gives tmp the owner of the file it replaces, old, so that a
// ledger running as that user can still read the file after an operator
// changed it as another (root with sudo, say).
func keepOwner(tmp *os.File, old os.FileInfo) error {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Getuid() && int(st.Gid) == os.Getgid()) {
		return nil
	}
	if err := tmp.Chown(int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("%s belongs to uid %d gid %d, and this process (uid %d) cannot make the new file theirs: run the command as that user (%w)", old.Name(), st.Uid, st.Gid, os.Getuid(), err)
	}
	return nil
}
