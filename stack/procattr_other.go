//go:build !linux

package stack

import "syscall"

// childAttr leaves envoy in the terminal's process group: a Ctrl-C
// reaches it too, and Stack.Wait does not count that as a failure.
func childAttr() *syscall.SysProcAttr { return nil }
