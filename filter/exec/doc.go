// Package exec is the "exec" filter plugin (see Filter), which pipes each message
// through a program. It needs Unix process groups; elsewhere it refuses to start.
package exec
