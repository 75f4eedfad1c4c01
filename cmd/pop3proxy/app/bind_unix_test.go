//go:build !windows

package app

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
)

// A bind refused for want of privilege says what to do, and the
// operating system's error stays reachable.
func TestListenErrorPrivilegedPort(t *testing.T) {
	denied := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
	err := listenError("listen", "0.0.0.0:110", denied)
	want := "listen 0.0.0.0:110: permission denied: ports below 1024 need root or the CAP_NET_BIND_SERVICE capability " +
		"(setcap or the systemd unit's AmbientCapabilities, see README, Install), or use a port above 1023"
	if err.Error() != want {
		t.Errorf("error\n %q\nwant\n %q", err, want)
	}
	if !errors.Is(err, syscall.EACCES) {
		t.Error("the system's error is lost")
	}
	// Above 1023 the port is not the reason; the system's words stand.
	err = listenError("listen_tls", "0.0.0.0:1995", denied)
	if strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE") || !strings.HasPrefix(err.Error(), "listen_tls 0.0.0.0:1995: ") {
		t.Errorf("error for port 1995: %q", err)
	}
}

// openListener on an address in use names the key and says that another
// program listens there.
func TestListenErrorAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := DefaultConfig()
	spec := listenSpec{key: "listen_proxy", addr: ln.Addr().String(), proxyProto: true}
	l, err := openListener(spec, &cfg, zaptest.NewLogger(t))
	if err == nil {
		l.ln.Close()
		t.Fatal("opened a listener on an address in use")
	}
	want := "listen_proxy " + ln.Addr().String() + ": address already in use: another program (perhaps another pop3proxy) listens there; stop it or give listen_proxy another address"
	if err.Error() != want {
		t.Errorf("error\n %q\nwant\n %q", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Error("the system's error is lost")
	}
}
