package bench

import (
	"os/exec"
	"syscall"
)

// stopWithParent has the kernel send the ledger SIGTERM if the bench ends
// without stopping it: killed, or writing to a pipe closed by its reader.
func stopWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
