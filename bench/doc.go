// Package bench measures pop3proxy against talking to the upstream
// directly. It holds only benchmarks, which need a real Dovecot:
//
//	go test -run '^$' -bench . -benchtime 2000x ./bench/
//
// Figures are printed by the benchmark framework (ms/RETR, msgs/s, B/op);
// no test here asserts a time, so slow machines do not flake.
package bench
