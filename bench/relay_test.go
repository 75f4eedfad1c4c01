package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	_ "github.com/pop3proxy/pop3proxy/filter/header" // the filtered workload
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

const (
	user     = "bench"
	password = "bench-secret"
	messages = 20
)

// message returns a message of about size bytes, lines of 76 octets like
// base64 attachments.
func message(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: bench@example.com\r\nTo: bench@example.com\r\nSubject: benchmark\r\n\r\n")
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVph", 3)[:76] + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// startProxy serves the gateway in-process on a loopback port, with the
// filter chain of filtersYAML ("" for none).
func startProxy(b *testing.B, filtersYAML string, options ...func(*proxy.Options)) string {
	b.Helper()
	opts := proxy.Options{
		Separators: "%",
		Upstream:   upstream.Options{DialTimeout: 5 * time.Second, Timeout: 30 * time.Second},
		MaxSize:    20 << 20,
	}
	for _, o := range options {
		o(&opts)
	}
	if filtersYAML != "" {
		chain, err := filter.BuildYAML([]byte(filtersYAML), zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { chain.Close() })
		sp, err := spool.New(spool.Options{Memory: 256 << 20})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sp.Close() })
		opts.Chain, opts.Spool = chain, sp
	}
	srv, err := pop3server.NewServer(pop3server.Options{
		Backend: proxy.New(opts),
		// Load rows open more sessions from one address than the default allows.
		MaxConnectionsPerIP: -1,
		Logger:              zap.NewNop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(b *testing.B, addr, login string) *client {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	cl := &client{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	cl.status(b)
	cl.cmd(b, "USER "+login)
	cl.cmd(b, "PASS "+password)
	return cl
}

func (cl *client) status(b *testing.B) {
	line, err := cl.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+OK") {
		b.Fatalf("response %q, %v", line, err)
	}
}

func (cl *client) cmd(b *testing.B, line string) {
	if _, err := cl.c.Write([]byte(line + "\r\n")); err != nil {
		b.Fatal(err)
	}
	cl.status(b)
}

// retr fetches one message and returns its size on the wire.
func (cl *client) retr(b *testing.B, n int) int {
	cl.cmd(b, fmt.Sprintf("RETR %d", n))
	total := 0
	for {
		line, err := cl.r.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		total += len(line)
		if len(line) == 3 && line[0] == '.' {
			return total
		}
	}
}

func benchmarkRetr(b *testing.B, size int) {
	d := upstreamtest.StartDovecot(b, upstreamtest.DovecotOptions{Users: map[string]string{user: password}})
	msg := message(size)
	for range messages {
		d.Deliver(b, user, msg)
	}
	proxyAddr := startProxy(b, "")
	filteredAddr := startProxy(b, "- {type: header, add: {X-Scanned-By: pop3proxy}}\n")
	for _, tc := range []struct{ name, addr, login string }{
		{"direct", d.Addr, user},
		{"proxy", proxyAddr, user + "%" + d.Addr},
		// Every message is held (under max_size) and edited.
		{"proxy-filtered", filteredAddr, user + "%" + d.Addr},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cl := dial(b, tc.addr, tc.login)
			defer cl.c.Close()
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				cl.retr(b, i%messages+1)
			}
			elapsed := time.Since(start)
			b.ReportMetric(float64(elapsed.Microseconds())/1000/float64(b.N), "ms/RETR")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			if kib, ok := peakRSSKiB(); ok {
				b.ReportMetric(float64(kib)/1024, "peak-RSS-MiB")
			}
		})
	}
}

// BenchmarkRetr25k measures a typical message, where per-command latency
// (such as a stall between Nagle's algorithm and delayed ACKs) counts more
// than throughput.
func BenchmarkRetr25k(b *testing.B) { benchmarkRetr(b, 25<<10) }

// BenchmarkRetr1M shows streaming throughput for larger messages.
func BenchmarkRetr1M(b *testing.B) { benchmarkRetr(b, 1<<20) }

// peakRSSKiB reads the process's peak resident memory (client and proxy
// together; Dovecot runs apart) from /proc, where there is one.
func peakRSSKiB() (int64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
