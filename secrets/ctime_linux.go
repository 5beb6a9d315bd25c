package secrets

import (
	"os"
	"syscall"
)

// changeTime is the inode change time of fi, which moves on any write or
// rename even when the size and modification time stay the same.
func changeTime(fi os.FileInfo) (sec, nsec int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Ctim.Sec), int64(st.Ctim.Nsec)
	}
	return 0, 0
}
