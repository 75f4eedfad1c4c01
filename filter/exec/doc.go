// Package exec is the "exec" filter plugin: it pipes each message through
// an external program and delivers what the program writes to its standard
// output. See Filter for the configuration keys. It needs process groups,
// so it is built on Unix systems only.
package exec
