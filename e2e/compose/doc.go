// Package compose checks the repository's compose.yaml, which cannot run
// here (no Docker daemon): it is loaded and validated with the Compose
// Specification's own library, compose-go, and held to the rules that
// keep it safe and in step with the rest of the tree (the pinned Envoy,
// the shipped bootstrap relocated to the service names, only Envoy
// published, and on loopback).
//
// It is its own module so that compose-go's dependencies stay out of
// Tollgate's go.mod. It is test support only.
package compose
