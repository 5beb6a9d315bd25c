//go:build !linux

package bench

import "os/exec"

// stopWithParent does nothing where the kernel cannot signal a child when
// its parent dies: a bench that is killed leaves its ledger running.
func stopWithParent(*exec.Cmd) {}
