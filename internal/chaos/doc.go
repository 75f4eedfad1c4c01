//go:build linux

// Package chaos checks the proxy's promise while things break: whatever
// goes wrong, no mail disappears, none reaches a client truncated or
// altered beyond what the filter chain is configured to do, and no
// infected message is delivered unmarked.
//
// A World runs the proxy as a process in front of a real Dovecot, with a
// real clamd, spamd and rspamd (each with a standby instance), every one
// of them behind a faultnet relay. Each Round tops up the mailboxes,
// reads them directly from Dovecot, lets clients fetch through the proxy
// while a seeded schedule (Plan) injects faults, waits until every
// session has ended, checks that the idle proxy holds no more goroutines
// and descriptors than a fresh one and no spool file, reads the
// mailboxes again and asks the Oracle: every message must have been
// delivered byte for byte behind the fields the chain adds (or replaced
// by a notice exactly when it is infected), or still be on the server;
// it may be gone only if a client received it whole and sent DELE and
// QUIT.
//
// The clients do what mail clients do (fetch and delete, fetch and keep,
// headers first) and what breaks proxies (hang up mid-RETR, during a
// scan, after DELE without QUIT); the faults are listed in Kind. The
// same seed gives the same schedule and client choices, so a failing run
// is replayed with POP3PROXY_CHAOS_SEED; the daemons' timing still
// varies.
//
// TestChaos is the short run of the test command, TestLoad the load run
// (over 1,000 connections, slowloris and garbage floods beside polite
// clients) and TestSoak the long run on demand (README, Reliability).
package chaos
