package sockaddr

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"unix:///run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"UNIX:///run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"tcp://127.0.0.1:3310", "tcp", "127.0.0.1:3310"},
		{"tcp://clamd.example.com:3310", "tcp", "clamd.example.com:3310"},
		{"tcp://[::1]:3310", "tcp", "[::1]:3310"},
	} {
		network, addr, err := Parse(tc.in, "")
		if err != nil || network != tc.network || addr != tc.addr {
			t.Errorf("%q: got (%q, %q, %v), want (%q, %q)", tc.in, network, addr, err, tc.network, tc.addr)
		}
	}
	for _, in := range []string{
		"", "/run/clamav/clamd.ctl", "127.0.0.1:3310", "clamd.ctl",
		"unix://run/clamav/clamd.ctl", "unix://", "unix:///", "unix:///run/clamav/",
		"unix:///" + strings.Repeat("x", 120),
		"tcp://", "tcp://127.0.0.1", "tcp://:3310", "tcp://127.0.0.1:0", "tcp://127.0.0.1:65536",
		"tcp://127.0.0.1:http", "tcp://127.0.0.1:3310/", "tcp://user@host:3310", "tcp://[::1]",
		"http://127.0.0.1:3310", "udp://127.0.0.1:3310",
	} {
		if network, addr, err := Parse(in, ""); err == nil {
			t.Errorf("%q: accepted as (%q, %q)", in, network, addr)
		}
	}
}
