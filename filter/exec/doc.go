// Package exec is the "exec" filter plugin: it pipes each message through
// an external program and delivers what the program writes to its standard
// output. See Filter for the configuration keys. It needs process groups,
// so it works on Unix systems only; elsewhere (Windows) "exec" is
// registered only to refuse to start with the reason.
package exec
