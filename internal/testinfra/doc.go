// Package testinfra is what the integration tests of every package share:
// finding programs (NeedBinary skips a test loudly, or fails it under
// CI=true), daemons on free loopback ports for a test (Launch, Daemon), and
// throwaway certificates (NewTLS, NewPKI), and fake daemons: listeners
// that serve each connection with a function (Listen, Serve,
// ServeLoopback) or never answer (Silent). It imports no package of the
// proxy, so that scanner tests do not import upstream helpers and vice
// versa.
package testinfra
