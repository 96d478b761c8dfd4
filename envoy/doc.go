// Package envoy loads and checks Tollgate's Envoy configuration, and runs
// the dev gateway: a small Go stand-in for Envoy that serves the same
// bootstrap file on machines without an envoy binary.
//
// Loading is strict. A bootstrap is parsed into go-control-plane's
// bootstrap.v3.Bootstrap with protojson (unknown fields are errors, every
// typed_config must name a known type), passes the generated ValidateAll
// rules, including those of every typed_config payload, and passes
// cross-reference checks Envoy itself would only fail at run time or not
// at all (a route to a missing cluster, a gRPC service on an HTTP/1
// cluster, a per-filter config naming no filter).
//
// The gateway follows Envoy's behaviour for the features the file uses,
// as described in the project's ext_authz reference: path normalization
// before routing, virtual host and route matching, per-route ext_authz
// settings, the CheckRequest it sends, how it applies the CheckResponse,
// and failing closed. It must never forward a request Envoy would not
// forward, and never start with a configuration field it does not
// implement: such a field is a load error that names it.
package envoy
