package upstream

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// stuff dot-stuffs body and appends the terminator, as a server does.
// Written independently of the reader under test.
func stuff(body string) string {
	var b strings.Builder
	lineStart := true
	for i := 0; i < len(body); i++ {
		if lineStart && body[i] == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(body[i])
		lineStart = body[i] == '\n'
	}
	if !lineStart {
		b.WriteString("\r\n")
	}
	return b.String() + ".\r\n"
}

func TestRetrByteExact(t *testing.T) {
	long := strings.Repeat("x", 100_000) // one 100 kB line, longer than the 64 KiB buffer
	body := "Subject: dots\r\n\r\n" +
		".leading dot\r\n" +
		"..two dots\r\n" +
		".\r\n" + // a lone dot: stuffed to ".." on the wire
		". \r\n" +
		".\r\r\n" +
		"bare LF\nbare CR\rin line\r\n" +
		"8-bit \xe4\xf6\xfc\xff and NUL \x00 bytes\r\n" +
		"." + long + "\r\n" +
		long + ".\r\n" +
		"last line\r\n"
	c, srv := loggedIn(t, `
		C: RETR 1
		S: +OK 120 octets
		S!raw `+strconv.Quote(stuff(body))+`
		C: TOP 1 0
		S: +OK top of message follows
		S!raw `+strconv.Quote(stuff("Subject: dots\r\n\r\n"))+`
		C: NOOP
		S: +OK
		C: QUIT
		S: +OK`, Options{})

	m, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Size != 120 {
		t.Errorf("Size = %d, want 120", m.Size)
	}
	if _, err := c.List(0); !errors.Is(err, ErrMessageOpen) {
		t.Errorf("command during RETR: %v, want ErrMessageOpen", err)
	}
	got, err := io.ReadAll(m)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if !bytes.Equal(got, []byte(body)) {
		t.Errorf("body differs at byte %d of %d (got %d bytes)", firstDiff(got, []byte(body)), len(body), len(got))
	}
	if err := m.Close(); err != nil || c.Broken() {
		t.Errorf("Close after EOF = %v, broken = %v", err, c.Broken())
	}

	m, err = c.Top(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m.Size != -1 {
		t.Errorf("TOP Size = %d, want -1", m.Size)
	}
	if got, err := io.ReadAll(m); err != nil || string(got) != "Subject: dots\r\n\r\n" {
		t.Errorf("TOP = %q, %v", got, err)
	}
	// go-pop3 takes over again after the streamed responses.
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}

func TestRetrServerError(t *testing.T) {
	c, srv := loggedIn(t, `
		C: RETR 9
		S: -ERR no such message
		C: NOOP
		S: +OK
		C: QUIT
		S: +OK`, Options{})
	_, err := c.Retr(9)
	var se *ServerError
	if !errors.As(err, &se) || se.Text != "no such message" || c.Broken() {
		t.Fatalf("Retr(9) = %v", err)
	}
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	srv.Wait(t)
}

// TestRetrNotReadToEnd: a Message closed early leaves the rest of the body on
// the wire, so the connection is given up, without QUIT (the script ends
// after the body).
func TestRetrNotReadToEnd(t *testing.T) {
	c, srv := loggedIn(t, `
		C: RETR 1
		S: +OK
		S!repeat 1000 "some line of the message\r\n"
		S: .`, Options{})
	m, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if !c.Broken() {
		t.Fatal("not broken after closing an unfinished message")
	}
	if _, err := m.Read(make([]byte, 100)); !errors.Is(err, ErrConnection) {
		t.Errorf("Read after Close = %v", err)
	}
	wantConnErr(t, c, c.Noop())
	if err := c.Quit(); !errors.Is(err, ErrConnection) {
		t.Errorf("Quit on a broken connection = %v, want ErrConnection", err)
	}
	srv.Wait(t)
}

func TestRetrConnectionLost(t *testing.T) {
	c, srv := loggedIn(t, `
		C: RETR 1
		S: +OK
		S: Subject: cut short
		S:
		S: half a bo
		S!close`, Options{})
	m, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(m)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	wantConnErr(t, c, err)
	srv.Wait(t)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestRetrConstantMemory streams a 16 MB message, which must take constant
// memory.
func TestRetrConstantMemory(t *testing.T) {
	const line = "..a line of a big message, dot-stuffed on the wire, 64 bytes..\r\n"
	const lines = 16 << 20 / len(line)
	c, srv := loggedIn(t, `
		C: RETR 1
		S: +OK
		S!repeat `+strconv.Itoa(lines)+` "`+line[:len(line)-2]+`\r\n"
		S: .
		C: QUIT
		S: +OK`, Options{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := m.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if want := int64(lines * (len(line) - 1)); n != want {
		t.Errorf("read %d bytes, want %d", n, want)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("streaming %d bytes allocated %d bytes, want < 1 MiB", n, d)
	} else {
		t.Logf("streaming %d bytes allocated %d bytes", n, d)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}
