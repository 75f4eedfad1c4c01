package spool_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/pop3proxy/pop3proxy/filter/spool"
)

func newSpool(t *testing.T, memory int64) *spool.Spool {
	t.Helper()
	s, err := spool.New(spool.Options{Memory: memory, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func readAll(t *testing.T, b *spool.Buffer) []byte {
	t.Helper()
	got, err := io.ReadAll(b.Open())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func dirEntries(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestInMemoryWithinBudget checks that a Buffer that fits stays in memory,
// reads back exactly, and gives its memory back on Close.
func TestInMemoryWithinBudget(t *testing.T) {
	s := newSpool(t, 1<<20)
	data := randomBytes(300_000)
	b := s.NewBuffer(0)
	// Odd write sizes cross chunk boundaries.
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 7777)
		if _, err := b.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if !b.InMemory() || b.Size() != int64(len(data)) {
		t.Fatalf("InMemory %v, Size %d", b.InMemory(), b.Size())
	}
	if got := readAll(t, b); !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	if used := s.Stats().MemoryUsed; used < int64(len(data)) || used > int64(len(data))+spool.ChunkSize {
		t.Errorf("MemoryUsed = %d for %d bytes", used, len(data))
	}
	b.Close()
	if used := s.Stats().MemoryUsed; used != 0 {
		t.Errorf("MemoryUsed = %d after Close, want 0", used)
	}
}

// TestSpillsBeyondBudget checks that writing past the budget moves the
// Buffer to a file without losing or reordering a byte, returns its
// memory, and leaves no name in the directory.
func TestSpillsBeyondBudget(t *testing.T) {
	s := newSpool(t, 4*spool.ChunkSize)
	data := randomBytes(10*spool.ChunkSize + 123)
	b := s.NewBuffer(0)
	if _, err := b.ReadFrom(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if b.InMemory() {
		t.Fatal("a Buffer over the budget stayed in memory")
	}
	if got := readAll(t, b); !bytes.Equal(got, data) {
		t.Fatal("bytes differ after spilling")
	}
	st := s.Stats()
	if st.MemoryUsed != 0 || st.FilesOpen != 1 || st.Spilled != 1 {
		t.Errorf("stats = %+v, want no memory, one open file", st)
	}
	if n := dirEntries(t, s.Dir()); n != 0 {
		t.Errorf("%d names in the spool directory while the file is open, want 0", n)
	}
	b.Close()
	if st := s.Stats(); st.FilesOpen != 0 {
		t.Errorf("FilesOpen = %d after Close", st.FilesOpen)
	}
}

// TestSizeHintGoesToFile checks that a Buffer announced larger than what
// is left of the budget does not take memory first.
func TestSizeHintGoesToFile(t *testing.T) {
	s := newSpool(t, 2*spool.ChunkSize)
	b := s.NewBuffer(3 * spool.ChunkSize)
	defer b.Close()
	b.Write([]byte("x"))
	if b.InMemory() || s.Stats().MemoryUsed != 0 {
		t.Fatalf("InMemory %v, MemoryUsed %d", b.InMemory(), s.Stats().MemoryUsed)
	}
}

// TestBudgetSharedUnderConcurrency checks that many Buffers written at
// once never hold more memory than the budget, and all read back intact.
func TestBudgetSharedUnderConcurrency(t *testing.T) {
	const budget = 8 * spool.ChunkSize
	s := newSpool(t, budget)
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := int64(0)
	for i := range 16 {
		wg.Go(func() {
			data := randomBytes(3*spool.ChunkSize + i)
			b := s.NewBuffer(0)
			defer b.Close()
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 5000)
				if _, err := b.Write(rest[:n]); err != nil {
					t.Error(err)
					return
				}
				rest = rest[n:]
				mu.Lock()
				peak = max(peak, s.Stats().MemoryUsed)
				mu.Unlock()
			}
			got, err := io.ReadAll(b.Open())
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("buffer %d: %v, equal %v", i, err, bytes.Equal(got, data))
			}
		})
	}
	wg.Wait()
	if peak > budget {
		t.Errorf("peak memory %d over the budget %d", peak, budget)
	}
	if st := s.Stats(); st.MemoryUsed != 0 || st.FilesOpen != 0 || st.Spilled == 0 {
		t.Errorf("after all Close: %+v", st)
	}
}

// TestConcurrentReadAt checks that judges reading one spooled Buffer at
// once each see all of it.
func TestConcurrentReadAt(t *testing.T) {
	for _, memory := range []int64{-1, 0} {
		s := newSpool(t, memory)
		data := randomBytes(5*spool.ChunkSize + 17)
		b := s.NewBuffer(0)
		b.Write(data)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if got := readAll(t, b); !bytes.Equal(got, data) {
					t.Errorf("memory %d: concurrent reader saw other bytes", memory)
				}
			})
		}
		wg.Wait()
		b.Close()
	}
}

// TestReadAtDuringClose: a reader that is still going when the Buffer is
// closed (a filter abandoned at its timeout) gets the right bytes or
// ErrClosed, never another message's; run with -race, it also checks
// that Close and ReadAt do not race.
func TestReadAtDuringClose(t *testing.T) {
	for _, memory := range []int64{-1, 0} {
		s := newSpool(t, memory)
		data := randomBytes(3*spool.ChunkSize + 5)
		b := s.NewBuffer(0)
		b.Write(data)
		var wg sync.WaitGroup
		started := make(chan struct{}, 4)
		for range 4 {
			wg.Go(func() {
				started <- struct{}{}
				p := make([]byte, 1000)
				for off := int64(0); ; off = (off + 777) % int64(len(data)) {
					n, err := b.ReadAt(p, off)
					if err == spool.ErrClosed {
						return
					}
					if err != nil && err != io.EOF {
						t.Errorf("memory %d: ReadAt = %v", memory, err)
						return
					}
					if !bytes.Equal(p[:n], data[off:off+int64(n)]) {
						t.Errorf("memory %d: ReadAt at %d returned other bytes", memory, off)
						return
					}
				}
			})
		}
		for range 4 {
			<-started
		}
		b.Close()
		// Reusing the freed chunks must not show through a late reader.
		other := s.NewBuffer(0)
		other.Write(randomBytes(4 * spool.ChunkSize))
		wg.Wait()
		other.Close()
	}
}

func TestClosedBuffer(t *testing.T) {
	s := newSpool(t, -1)
	b := s.NewBuffer(0)
	b.Write([]byte("abc"))
	b.Close()
	if _, err := b.Write([]byte("d")); err != spool.ErrClosed {
		t.Errorf("Write after Close = %v", err)
	}
	if _, err := b.ReadAt(make([]byte, 1), 0); err != spool.ErrClosed {
		t.Errorf("ReadAt after Close = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestPrivateDefaultDirectory checks that without a directory the Spool
// makes a private one and removes it on Close.
func TestPrivateDefaultDirectory(t *testing.T) {
	s, err := spool.New(spool.Options{Memory: 0})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("spool directory mode %v, want 0700", st.Mode().Perm())
	}
	s.Close()
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Errorf("spool directory still there after Close: %v", err)
	}
}

func TestUnusableDirectory(t *testing.T) {
	// Below a regular file no directory can be made, even by root.
	file := t.TempDir() + "/file"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := spool.New(spool.Options{Dir: file + "/spool"}); err == nil {
		t.Fatal("an unusable spool directory was accepted")
	}
}

// TryBuffer takes its size from the budget at once, or refuses; it never
// goes to a file, fails writes beyond what the budget has, and gives
// everything back on Close.
func TestTryBuffer(t *testing.T) {
	s := newSpool(t, 4*spool.ChunkSize)
	a, ok := s.TryBuffer(2*spool.ChunkSize + 1) // three chunks
	if !ok {
		t.Fatal("TryBuffer refused what fits")
	}
	if used := s.Stats().MemoryUsed; used != 3*spool.ChunkSize {
		t.Errorf("reserved %d bytes, want 3 chunks", used)
	}
	if _, ok := s.TryBuffer(2 * spool.ChunkSize); ok {
		t.Error("TryBuffer took more than the budget has")
	}
	data := randomBytes(3*spool.ChunkSize + 10) // the fourth chunk comes from the budget
	if n, err := a.ReadFrom(bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if !a.InMemory() || !bytes.Equal(readAll(t, a), data) {
		t.Error("a TryBuffer is not in memory, or holds other bytes")
	}
	if _, err := a.Write(randomBytes(spool.ChunkSize)); !errors.Is(err, spool.ErrNoRoom) {
		t.Errorf("writing past the budget: %v, want ErrNoRoom", err)
	}
	if st := s.Stats(); st.FilesOpen != 0 || st.Spilled != 0 {
		t.Errorf("a TryBuffer went to a file: %+v", st)
	}
	a.Close()
	if used := s.Stats().MemoryUsed; used != 0 {
		t.Errorf("%d bytes still taken after Close", used)
	}
	b, ok := s.TryBuffer(10)
	if !ok {
		t.Fatal("TryBuffer refused after Close")
	}
	b.Close()
	if used := s.Stats().MemoryUsed; used != 0 {
		t.Errorf("%d bytes taken by an unused TryBuffer after Close", used)
	}
	if _, ok := newSpool(t, 0).TryBuffer(1); ok {
		t.Error("TryBuffer with no memory budget")
	}
}
