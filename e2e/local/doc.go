// Package local is the end-to-end test of Tollgate on one machine: the
// whole stack started in process (internal/stack) behind the dev gateway
// running envoy/envoy.yaml, driven through the gateway as the tutorial's
// user drives it, with parts of the stack stopped and started under it;
// and every shell example of README.md and docs/ run with bash against a
// fresh stack, its output compared with what the page shows (TestDocs).
package local
