// Package scannertest runs real virus and spam scanners for tests, and
// builds the standard test strings they flag.
//
//   - StartClamd / StartClamdWith: clamd (Debian package clamav-daemon)
//     with one signature, matching EICAR, on a unix socket and a loopback
//     TCP port (docs/scanners.md, A clamd for tests).
//   - StartSpamd / StartSpamdWith: spamd (Debian package spamd) on a
//     loopback port, local tests only (docs/scanners.md, spamd sizes and
//     rules), with one child unless SpamdOptions.MaxChildren says more.
//   - StartRspamd / StartRspamdWith: rspamd (Debian package rspamd) from
//     Debian's configuration with local overrides, on loopback ports, with
//     a DNS resolver of its own (docs/scanners.md, rspamd).
//   - EICAR and GTUBE: the 68-byte anti-virus and anti-spam test strings,
//     assembled at run time so that no file of the repository contains
//     them and no scanner flags the source tree. Do not write them into
//     files that stay.
//
// Each daemon runs in the foreground in a temporary directory, and its
// process group is stopped when the test ends. Without the program a test
// is skipped, or fails when testinfra.IntegrationRequired reports true
// (CI=true or POP3PROXY_INTEGRATION=require); ./test.sh installs the
// packages when run as root.
//
// The test clamd answers PING about 0.1 s after its start and scans a
// 1 MiB message in about 40 ms (clamd 1.4.6, Debian 12).
package scannertest
