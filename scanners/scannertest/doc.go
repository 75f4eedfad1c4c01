// Package scannertest runs real virus and spam scanners for tests, and
// builds the standard test strings they flag: StartClamd (Debian package
// clamav-daemon, EICAR signature only), StartSpamd (package spamd, local
// tests only) and StartRspamd (package rspamd, with a DNS resolver of its
// own); see docs/scanners.md, "A clamd for tests" and "A rspamd for tests".
// EICAR and GTUBE are assembled at run time so that no file of the
// repository contains them and no scanner flags the source tree: do not
// write them into files that stay.
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
