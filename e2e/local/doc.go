// Package local is the end-to-end test of Tollgate on one machine: the
// whole stack started in process (internal/stack) behind the dev gateway
// running envoy/envoy.yaml, driven through the gateway as the tutorial's
// user drives it, with parts of the stack stopped and started under it.
package local
