// Package testinfra is what the integration tests of every package share:
// finding installed programs (NeedBinary, which skips a test loudly, or
// fails it under CI=true), starting daemons on free loopback ports for the
// length of a test (Launch, Daemon), and throwaway certificates (NewTLS,
// NewPKI). It depends on no package of the proxy, so that scanner tests do
// not import upstream helpers and the other way round.
package testinfra
