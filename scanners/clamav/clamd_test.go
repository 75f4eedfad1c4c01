package clamav_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
)

// TestClamdFraming: the fake checks the framing byte for byte (chunks of at
// most 64 KiB, nothing after the zero-length chunk) and the data.
func TestClamdFraming(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		got := make(chan clamRequest, 1)
		p, _ := clamNew(t, clamav.Filter{Address: clamFake(t, network, clamReplying(t, "stream: OK\x00", got))})
		for _, size := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200<<10 + 3} {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = byte(i*7 + i>>16)
			}
			if _, err := clamJudge(t, p, msg, 5*time.Second); err != nil {
				t.Fatalf("%s, %d bytes: %v", network, size, err)
			}
			req := <-got
			if !bytes.Equal(req.data, msg) {
				t.Errorf("%s, %d bytes: clamd received %d different bytes", network, size, len(req.data))
			}
			if len(req.extra) != 0 {
				t.Errorf("%s, %d bytes: %d bytes sent after the zero-length chunk", network, size, len(req.extra))
			}
			if want := (size + 64<<10 - 1) / (64 << 10); len(req.chunks) != want {
				t.Errorf("%s, %d bytes: %d chunks %v, want %d", network, size, len(req.chunks), req.chunks, want)
			}
		}
	}
}

// TestClamdReplies: everything but exactly "stream: OK" or "stream: <name>
// FOUND" is an error, never clean.
func TestClamdReplies(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		close       bool   // close without reading the stream
		virus       string // "" with clean false: an error is expected
		clean       bool
		contains    string
	}{
		{name: "ok", reply: "stream: OK\x00", clean: true},
		{name: "ok with LF", reply: "stream: OK\n", clean: true},
		{name: "found", reply: "stream: Eicar-Test-Signature-NDB.UNOFFICIAL FOUND\x00", virus: "Eicar-Test-Signature-NDB.UNOFFICIAL"},
		{name: "garbage", reply: "HELLO\x00", contains: "unexpected reply"},
		{name: "binary garbage", reply: "\xff\xfe\x01\x00"},
		{name: "empty reply", reply: "\x00", contains: "empty reply"},
		{name: "close without reply", reply: "", contains: "without a reply"},
		{name: "close without reading", close: true},
		{name: "unterminated ok", reply: "stream: OK", contains: "middle of the reply"},
		{name: "error", reply: "stream: Can't allocate memory ERROR\x00", contains: "allocate"},
		{name: "read timeout", reply: "COMMAND READ TIMED OUT\n", contains: "ReadTimeout"},
		{name: "unknown command", reply: "UNKNOWN COMMAND\x00", contains: "UNKNOWN COMMAND"},
		{name: "endless reply", reply: strings.Repeat("stream: OK", 1000), contains: "longer than"},
		{name: "ok then more", reply: "stream: OK \x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serve := clamReplying(t, tc.reply, nil)
			if tc.close {
				serve = func(c net.Conn) {}
			}
			p, _ := clamNew(t, clamav.Filter{Address: clamFake(t, "tcp", serve), Action: "tag"})
			start := time.Now()
			v, err := clamJudge(t, p, []byte("Subject: x\r\n\r\nbody\r\n"), 5*time.Second)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %v", took)
			}
			switch {
			case tc.clean:
				if err != nil || v.Action != filter.Continue || len(v.Edits) != 4 || v.Edits[3].Value != clamav.CleanValue {
					t.Errorf("got %+v, %v; want clean", v, err)
				}
			case tc.virus != "":
				if err != nil || v.Reason != "virus "+tc.virus {
					t.Errorf("got %+v, %v; want virus %s", v, err, tc.virus)
				}
			default:
				clamAssertError(t, v, err, tc.contains)
			}
		})
	}
}

// TestClamdEarlyReply: clamd answers "size limit exceeded" and closes while
// the client is still writing. The error must be clamd's reason, not the
// EPIPE or ECONNRESET of the write (docs/scanners.md, clamd replies).
func TestClamdEarlyReply(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := clamFake(t, network, func(c net.Conn) {
				// Read the command and part of the first chunk, as clamd
				// does before it checks the announced length.
				io.ReadFull(c, make([]byte, 1000))
				io.WriteString(c, "INSTREAM size limit exceeded. ERROR\x00")
				// Closing with unread data makes the kernel reset the
				// connection: the client's writes fail.
			})
			p, _ := clamNew(t, clamav.Filter{Address: addr})
			for range 20 {
				v, err := clamJudge(t, p, make([]byte, 8<<20), 10*time.Second)
				clamAssertError(t, v, err, "size limit exceeded")
				if !errors.Is(err, clamav.ErrTooLarge) || !errors.Is(err, filter.ErrTooLarge) {
					t.Errorf("error %v does not wrap clamav.ErrTooLarge and filter.ErrTooLarge", err)
				}
				if s := err.Error(); strings.Contains(s, "broken pipe") || strings.Contains(s, "reset by peer") {
					t.Errorf("error reports the write failure: %v", err)
				}
				if t.Failed() {
					break
				}
			}
		})
	}
}

// TestClamdMaxStream: a message larger than max_stream is an error without a
// connection.
func TestClamdMaxStream(t *testing.T) {
	var conns atomic.Int32
	addr := clamFake(t, "tcp", func(c net.Conn) {
		conns.Add(1)
		clamReplying(t, "stream: OK\x00", nil)(c)
	})
	p, _ := clamNew(t, clamav.Filter{Address: addr, MaxStreamSize: 1000})
	v, err := clamJudge(t, p, make([]byte, 1001), 5*time.Second)
	clamAssertError(t, v, err, "too large for clamd")
	if !errors.Is(err, clamav.ErrTooLarge) || !errors.Is(err, filter.ErrTooLarge) {
		t.Errorf("error %v does not wrap clamav.ErrTooLarge and filter.ErrTooLarge", err)
	}
	if conns.Load() != 0 {
		t.Errorf("connected to clamd for a message over max_stream")
	}
	if _, err := clamJudge(t, p, make([]byte, 1000), 5*time.Second); err != nil {
		t.Errorf("message of exactly max_stream: %v", err)
	}
}

// TestClamdHang: a clamd that stops reading or never answers costs at most
// the context's deadline, and the error is a timeout.
func TestClamdHang(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		serve func(c net.Conn, done <-chan struct{})
	}{
		{"never answers", 1000, func(c net.Conn, _ <-chan struct{}) {
			io.Copy(io.Discard, c) // until the client gives up
		}},
		{"never reads", 16 << 20, func(c net.Conn, done <-chan struct{}) {
			<-done
		}},
		{"stops mid-reply", 1000, func(c net.Conn, _ <-chan struct{}) {
			clamReadStream(c)
			io.WriteString(c, "stream: ")
			io.Copy(io.Discard, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			addr := clamFake(t, "tcp", func(c net.Conn) { tc.serve(c, done) })
			// Runs before clamFake's cleanup, which waits for the fake.
			t.Cleanup(func() { close(done) })
			p, _ := clamNew(t, clamav.Filter{Address: addr, MaxStreamSize: 32 << 20})
			start := time.Now()
			v, err := clamJudge(t, p, make([]byte, tc.size), 200*time.Millisecond)
			took := time.Since(start)
			clamAssertError(t, v, err, "")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v is not a timeout", err)
			}
			if took < 150*time.Millisecond || took > 2*time.Second {
				t.Errorf("returned after %v with a 200ms deadline", took)
			}
		})
	}
}

// TestClamdCancel: cancelling the context (the client went away) interrupts
// a scan at once, also without a deadline.
func TestClamdCancel(t *testing.T) {
	p, _ := clamNew(t, clamav.Filter{Address: clamFake(t, "unix", func(c net.Conn) { io.Copy(io.Discard, c) })})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	v, err := p.Judge(ctx, filter.NewMessage([]byte("Subject: x\r\n\r\nbody\r\n"), clamMeta))
	took := time.Since(start)
	clamAssertError(t, v, err, "")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v is not context.Canceled", err)
	}
	if took > time.Second {
		t.Errorf("cancelled scan returned after %v", took)
	}
}

// TestClamdUnreachable: with nothing listening, the error names clamd's
// address, quickly.
func TestClamdUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, address := range []string{"tcp://" + addr, "unix:///nonexistent/clamd.ctl"} {
		p, _ := clamNew(t, clamav.Filter{Address: address})
		start := time.Now()
		v, err := clamJudge(t, p, []byte("Subject: x\r\n\r\nbody\r\n"), 5*time.Second)
		clamAssertError(t, v, err, strings.TrimPrefix(strings.TrimPrefix(address, "tcp://"), "unix://"))
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: took %v", address, took)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: refused connection reported as a timeout: %v", address, err)
		}
	}
}

// TestClamdConcurrent: concurrent scans each get a connection of their own
// and their own message's reply.
func TestClamdConcurrent(t *testing.T) {
	addr := clamFake(t, "tcp", func(c net.Conn) {
		data, _, err := clamReadStream(c)
		if err != nil {
			t.Errorf("fake clamd: %v", err)
			return
		}
		if bytes.Contains(data, []byte("infected")) {
			io.WriteString(c, "stream: "+string(bytes.TrimSpace(data[bytes.LastIndexByte(data, '\n')+1:]))+" FOUND\x00")
			return
		}
		io.WriteString(c, "stream: OK\x00")
	})
	p, _ := clamNew(t, clamav.Filter{Address: addr, Action: "reject"})
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			msg := fmt.Sprintf("Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", i*5000))
			want := ""
			if i%2 == 1 {
				msg += fmt.Sprintf("infected\nVirus-%d", i)
				want = fmt.Sprintf("virus Virus-%d", i)
			}
			v, err := clamJudge(t, p, []byte(msg), 10*time.Second)
			if err == nil && v.Reason != want {
				err = fmt.Errorf("message %d: reason %q, want %q", i, v.Reason, want)
			}
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
