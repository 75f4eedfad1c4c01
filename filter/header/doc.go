// Package header is the "header" filter plugin: fixed header field edits, without I/O (see Filter).
package header
