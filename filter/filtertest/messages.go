package filtertest

import (
	"errors"
	"io"
	"testing"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/spool"
)

// Spooled returns what write writes as a Message read from a spool file,
// as the proxy holds messages beyond its memory budget: the spool has no
// memory at all, so a plugin that reads the message into memory shows it.
func Spooled(t testing.TB, meta filter.Meta, write func(w io.Writer) error) *filter.Message {
	t.Helper()
	sp, err := spool.New(spool.Options{Memory: 0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	buf := sp.NewBuffer(0)
	t.Cleanup(func() { buf.Close() })
	if err := write(buf); err != nil {
		t.Fatalf("spooling the message: %v", err)
	}
	if buf.InMemory() {
		t.Fatal("the message is in memory, not in a spool file")
	}
	return filter.NewMessageAt(buf, buf.Size(), meta)
}

// SpooledBytes is Spooled for a message given whole.
func SpooledBytes(t testing.TB, meta filter.Meta, msg []byte) *filter.Message {
	t.Helper()
	return Spooled(t, meta, func(w io.Writer) error {
		_, err := w.Write(msg)
		return err
	})
}

// ErrDiskOnFire is how a FailingMessage fails.
var ErrDiskOnFire = errors.New("disk on fire")

// FailingMessage returns a message of size bytes whose first good bytes
// (zeros) can be read and the rest fail with ErrDiskOnFire, as a spool
// file on a failing disk.
func FailingMessage(good, size int64, meta filter.Meta) *filter.Message {
	return filter.NewMessageAt(failingSource{good}, size, meta)
}

type failingSource struct{ good int64 }

func (s failingSource) ReadAt(p []byte, off int64) (int, error) {
	n := max(0, min(int64(len(p)), s.good-off))
	clear(p[:n])
	if int(n) < len(p) {
		return int(n), ErrDiskOnFire
	}
	return int(n), nil
}
