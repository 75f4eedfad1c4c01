package bench

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// The relays are the limits the proxy is measured against, in the same run
// and on the same machine: any extra hop on loopback costs a sequential
// client about a quarter of direct Dovecot's rate, so "as fast as direct"
// can only mean "as fast as a hop allows".

// spliceRelay forwards bytes both ways and does no POP3 work at all: the
// limit for a proxy that streams. io.Copy between two TCP connections
// uses splice(2) on Linux, so the bytes never enter user space.
func spliceRelay(b *testing.B, upstream string) string {
	return serveRelay(b, func(client, up net.Conn) {
		done := make(chan struct{})
		go func() {
			io.Copy(up, client)
			up.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		io.Copy(client, up)
		client.(*net.TCPConn).CloseWrite()
		<-done
	}, upstream)
}

// storeForwardRelay forwards commands as they come and holds every
// multi-line answer whole before sending it in one write: the limit for a
// proxy that must see a whole message before its client sees any of it.
func storeForwardRelay(b *testing.B, upstream string) string {
	return serveRelay(b, func(client, up net.Conn) {
		cr, ur := bufio.NewReader(client), bufio.NewReaderSize(up, 64<<10)
		var answer bytes.Buffer
		// The greeting.
		if !relayLine(client, ur, &answer) {
			return
		}
		for {
			cmd, err := cr.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(up, cmd); err != nil {
				return
			}
			answer.Reset()
			if !readLine(ur, &answer) {
				return
			}
			if bytes.HasPrefix(answer.Bytes(), []byte("+OK")) && multiLine(cmd) {
				for {
					start := answer.Len()
					if !readLine(ur, &answer) {
						return
					}
					if bytes.Equal(answer.Bytes()[start:], []byte(".\r\n")) {
						break
					}
				}
			}
			if _, err := client.Write(answer.Bytes()); err != nil {
				return
			}
		}
	}, upstream)
}

// multiLine reports whether a command's +OK answer has more lines.
func multiLine(cmd string) bool {
	f := strings.Fields(strings.ToUpper(cmd))
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "RETR", "TOP", "CAPA":
		return true
	case "LIST", "UIDL":
		return len(f) == 1
	}
	return false
}

func readLine(r *bufio.Reader, to *bytes.Buffer) bool {
	line, err := r.ReadSlice('\n')
	for err == bufio.ErrBufferFull {
		to.Write(line)
		line, err = r.ReadSlice('\n')
	}
	to.Write(line)
	return err == nil
}

func relayLine(w io.Writer, r *bufio.Reader, buf *bytes.Buffer) bool {
	if !readLine(r, buf) {
		return false
	}
	_, err := w.Write(buf.Bytes())
	return err == nil
}

// serveRelay accepts clients on a loopback port and runs relay for each,
// with a connection of its own to upstream.
func serveRelay(b *testing.B, relay func(client, up net.Conn), upstream string) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer client.Close()
				up, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer up.Close()
				relay(client, up)
			})
		}
	}()
	return ln.Addr().String()
}
