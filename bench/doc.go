// Package bench measures pop3proxy against talking to the upstream
// directly. It holds only benchmarks, which need a real Dovecot:
//
//	go test -run '^$' -bench SpeedTable -benchtime 1x ./bench/
//	go test -run '^$' -bench Retr -benchtime 2000x ./bench/
//
// The first prints the speed table of the README (the proxy against the
// relays that bound it, with clamd and spamd); the second, single RETRs
// through the proxy and directly (ms/RETR, B/op). Run them apart: with
// -benchtime 2000x the table would start its daemons and run again. No
// test here asserts a time, so slow machines do not flake.
package bench
