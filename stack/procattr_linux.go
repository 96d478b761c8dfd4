package stack

import "syscall"

// childAttr puts envoy in its own process group, so a Ctrl-C at the
// terminal reaches only `tollgate up`, which stops the gateway first and
// in order, and has the kernel stop envoy if `tollgate up` dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
