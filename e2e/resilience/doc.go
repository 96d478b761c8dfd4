// Package resilience runs the Tollgate stack as separate processes and
// drives it under faults, key rotation and load, to prove that it keeps
// deciding correctly on its worst day and never loses an acknowledged
// write.
//
// It has three parts:
//
//   - a process harness (Stack, Proc): the tollgate binary started as
//     `tollgate issuer`, `tollgate authz`, `tollgate books` and
//     `tollgate gateway` on loopback ports, each of which can be killed,
//     terminated, paused or restarted on its own;
//   - a load driver (Driver): bounded in requests and in time, it sends
//     requests from a pool of workers and counts every answer by the
//     outcome it should have had and the one it had;
//   - a report (Row, Report): the figures of a run as a Markdown table.
//
// The scenarios themselves are the package's tests: each has a short form
// that runs in `go test ./...` and a long form, selected with
// TOLLGATE_SOAK=1, that `make soak` runs and reports.
//
// It must never send load anywhere but loopback, and never leave a
// process it started running after its test ends.
package resilience
