// Package header is the "header" filter plugin: it removes, replaces and
// adds fixed header fields on every message, the same for all, without any
// I/O. See Filter for the configuration keys.
package header
