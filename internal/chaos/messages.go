//go:build linux

package chaos

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// Sizes of the generated messages, chosen around the harness's proxy
// configuration: most fit in memory, some exceed buffer_memory (spooled)
// and some max_size (oversize handling).
const (
	smallMax  = 30 << 10
	spooledLo = 140 << 10
	spooledHi = 190 << 10
	oversizLo = 210 << 10
	oversizHi = 400 << 10
)

// newMessage returns a random message as delivered to the Maildir (LF
// line ends are allowed: the server serves CRLF) and whether it carries
// a virus. Some are what breaks naive relays: lines of a single dot or
// starting with dots, long lines, no final line end, 8-bit text, GTUBE.
func newMessage(rng *rand.Rand, seq int) (msg []byte, infected bool) {
	var b bytes.Buffer
	kind := rng.IntN(100)
	fmt.Fprintf(&b, "From: sender%d@example.org\r\nTo: rcpt@example.net\r\n", rng.IntN(50))
	fmt.Fprintf(&b, "Subject: chaos %d kind %d\r\nMessage-ID: <%d.%d@chaos.example>\r\n", seq, kind, seq, rng.Uint32())
	b.WriteString("Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")

	size := 200 + rng.IntN(smallMax)
	switch r := rng.IntN(100); {
	case r < 12:
		size = spooledLo + rng.IntN(spooledHi-spooledLo)
	case r < 20:
		size = oversizLo + rng.IntN(oversizHi-oversizLo)
	case r < 24:
		size = 0
	}
	switch {
	case kind < 10:
		infected = true
		b.WriteString("An attachment follows.\r\n")
		b.Write(scannertest.EICAR())
		b.WriteString("\r\n")
		size = min(size, smallMax)
	case kind < 18:
		b.Write(scannertest.GTUBE())
		b.WriteString("\r\n")
	}
	tricky := kind >= 80
	for b.Len() < size {
		switch {
		case tricky && rng.IntN(20) == 0:
			b.WriteString([]string{".\r\n", "..\r\n", ".leading dot\r\n", "..two dots\r\n", ". \r\n"}[rng.IntN(5)])
		case tricky && rng.IntN(40) == 0:
			b.WriteString(strings.Repeat("long-line-", 100+rng.IntN(900)) + "\r\n")
		case tricky && rng.IntN(30) == 0:
			b.WriteString("Grüße, ünïcödé and bytes \xa0\xff\r\n")
		default:
			for i := 0; i < 8+rng.IntN(8); i++ {
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteString("\r\n")
		}
	}
	if tricky && rng.IntN(4) == 0 {
		b.WriteString("no final line end")
	}
	return b.Bytes(), infected
}

var words = strings.Fields(`the quick brown fox jumps over lazy dog mail proxy message
 server client scan virus spam header body line octet mailbox delete retrieve quit`)
