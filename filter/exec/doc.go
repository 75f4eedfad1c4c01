// Package exec is the "exec" filter plugin: it pipes each message through
// an external program, without a shell, and delivers what the program
// writes to its standard output. See Filter for the configuration keys and
// what counts as a failure.
//
// It needs process groups to kill a program and everything it started, so
// it is built on Unix systems only.
package exec
