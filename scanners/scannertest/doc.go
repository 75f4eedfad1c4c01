// Package scannertest runs real virus and spam scanners for tests, and
// builds the standard test strings they flag.
//
//   - StartClamd / StartClamdWith: ClamAV's clamd (Debian package
//     clamav-daemon) in the foreground, with a database of one generated
//     signature that matches EICAR, on a unix socket and a loopback TCP
//     port (protocols.md §4.4).
//   - StartSpamd: SpamAssassin's spamd (Debian package spamd) on a
//     loopback port, local tests only (protocols.md §5.6).
//   - EICAR and GTUBE: the 68-byte anti-virus and anti-spam test strings,
//     assembled at run time so that no file of the repository contains
//     them: a scanner on a developer's machine or in CI would otherwise
//     flag the source tree. Do not write them into files that stay.
//
// Each daemon runs under a temporary directory of its own and is stopped,
// its whole process group killed if need be, when the test that started it
// ends. The system services of those packages are never used.
//
// Without the program a test is skipped with a loud message, or fails when
// testinfra.IntegrationRequired reports true (CI=true or
// POP3PROXY_INTEGRATION=require), so that CI never passes by skipping.
// ./test.sh installs the packages when run as root.
//
// # What the test clamd answers (clamd 1.4.6, Debian 12)
//
// EICAR, raw, in a text body or as a base64 attachment, is
// "stream: Eicar-Test-Signature-NDB.UNOFFICIAL FOUND" (ClamdEICARVirus);
// anything else is "stream: OK". StreamMaxLength is 1M unless
// ClamdOptions says otherwise: a stream of exactly that many bytes is
// scanned, one more byte gets "INSTREAM size limit exceeded. ERROR", sent
// while the client is still writing. clamd answers PING within about 0.1 s
// of its start, and scans a 1 MiB message in about 40 ms. It runs as the
// user running the test, root or not (its configuration names no User, so
// it drops no privileges), and nothing is downloaded: freshclam never runs.
package scannertest
