// Package spool holds the bytes of messages while the filter chain decides
// about them: in memory up to a budget shared by the whole process, in
// temporary files beyond it, so that hundreds of sessions do not need
// sessions × max_size of memory.
//
// A Buffer is written once, front to back, then read any number of times,
// concurrently, with ReadAt. Close returns its memory to the budget and
// removes its file. Files are unlinked at once (or never linked, with
// O_TMPFILE), so a crash leaves nothing behind where the OS allows it.
package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// ChunkSize is the unit in which memory is taken from the budget.
const ChunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { return new([ChunkSize]byte) }}

// Options configures a Spool.
type Options struct {
	// Memory is the budget of all Buffers together; a Buffer that does not
	// fit goes to a file. 0: everything is spooled; negative: unlimited.
	Memory int64
	// Dir is where files go, created with mode 0700 if missing; "" makes a
	// private one under the system's temporary directory, removed by Close.
	Dir string
}

// Spool hands out Buffers against one memory budget, safe for concurrent use.
type Spool struct {
	budget  int64
	dir     string
	ownsDir bool

	used    atomic.Int64 // bytes of memory taken by Buffers
	files   atomic.Int64 // open spool files
	spilled atomic.Int64 // Buffers that went to a file, ever
}

// New returns a Spool. It checks that files can be made in the directory.
func New(opts Options) (*Spool, error) {
	s := &Spool{budget: opts.Memory, dir: opts.Dir}
	if s.budget < 0 && s.dir == "" {
		return s, nil // never spills: no directory needed
	}
	if s.dir == "" {
		dir, err := os.MkdirTemp("", "pop3proxy-spool-")
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.dir, s.ownsDir = dir, true
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	f, err := s.createFile()
	if err != nil {
		if s.ownsDir {
			os.RemoveAll(s.dir)
		}
		return nil, fmt.Errorf("spool directory %s is not usable: %w", s.dir, err)
	}
	f.close()
	return s, nil
}

// Close removes the directory the Spool made; open Buffers keep working.
func (s *Spool) Close() error {
	if s.ownsDir {
		return os.RemoveAll(s.dir)
	}
	return nil
}

// Dir returns the directory of the spool files.
func (s *Spool) Dir() string { return s.dir }

// Stats is a snapshot of a Spool's use.
type Stats struct {
	MemoryUsed   int64 // bytes of memory held by Buffers
	MemoryBudget int64 // the budget, negative for none
	FilesOpen    int64 // Buffers that are files now
	Spilled      int64 // Buffers that went to a file since New
}

// Stats returns the Spool's current use.
func (s *Spool) Stats() Stats {
	return Stats{MemoryUsed: s.used.Load(), MemoryBudget: s.budget, FilesOpen: s.files.Load(), Spilled: s.spilled.Load()}
}

// reserve takes n bytes of the budget, or reports that they do not fit.
func (s *Spool) reserve(n int64) bool {
	if s.budget < 0 {
		s.used.Add(n)
		return true
	}
	for {
		used := s.used.Load()
		if used+n > s.budget {
			return false
		}
		if s.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (s *Spool) release(n int64) { s.used.Add(-n) }

// NewBuffer returns an empty Buffer. sizeHint, if positive, is what the
// caller expects to write: a Buffer that could not hold it in memory goes
// to a file at once instead of after filling its share of the budget.
func (s *Spool) NewBuffer(sizeHint int64) *Buffer {
	b := &Buffer{sp: s}
	if sizeHint > 0 && s.budget >= 0 && s.used.Load()+sizeHint > s.budget {
		b.toFile = true
	}
	return b
}

// ErrNoRoom: a Buffer from TryBuffer, which never goes to a file, was
// written past its reservation when the budget had no more room.
var ErrNoRoom = errors.New("spool: no room in the memory budget")

// TryBuffer returns a Buffer with size bytes of the budget taken at once,
// or false when they do not fit now (or the budget is 0), for work worth
// doing only in memory (scan-ahead): writing past the reservation takes
// more of the budget or fails with ErrNoRoom.
func (s *Spool) TryBuffer(size int64) (*Buffer, bool) {
	n := (max(size, 1) + ChunkSize - 1) / ChunkSize * ChunkSize
	if s.budget == 0 || !s.reserve(n) {
		return nil, false
	}
	return &Buffer{sp: s, reserved: n, noSpill: true}, true
}

// Buffer is one message's bytes. Write and Close belong to one goroutine;
// once writing is done, ReadAt, Size and Open may be called from many,
// even while Close runs (a filter abandoned at its timeout may still be
// reading). Close waits for reads under way, and later ones fail with
// ErrClosed, never reading memory given back for another message.
type Buffer struct {
	mu     sync.RWMutex // ReadAt against Close
	sp     *Spool
	chunks []*[ChunkSize]byte // in memory while file is nil
	file   *spoolFile
	size   int64
	toFile bool  // spill at the next write
	err    error // sticky write error
	closed bool

	reserved int64 // budget taken ahead (TryBuffer) and not yet in chunks
	noSpill  bool  // ErrNoRoom instead of a file
}

// takeChunk takes a chunk from the reservation or the budget, or reports false.
func (b *Buffer) takeChunk() bool {
	if b.reserved >= ChunkSize {
		b.reserved -= ChunkSize
		return true
	}
	return b.sp.reserve(ChunkSize)
}

func (b *Buffer) noRoom() error {
	b.err = ErrNoRoom
	return b.err
}

// ErrClosed is returned by a Buffer used after Close.
var ErrClosed = errors.New("spool: buffer closed")

// ErrWrite wraps every failure to store bytes (the spool directory is full
// or unwritable): no fault of the message or of the client.
var ErrWrite = errors.New("spool: cannot store the message")

// Write appends p, spilling to a file when the budget is exhausted.
func (b *Buffer) Write(p []byte) (int, error) {
	if b.closed {
		return 0, ErrClosed
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.file == nil && b.toFile {
		if err := b.spill(); err != nil {
			return 0, err
		}
	}
	if b.file != nil {
		n, err := b.file.f.Write(p)
		b.size += int64(n)
		if err != nil {
			b.err = fmt.Errorf("%w in %s: %w", ErrWrite, b.sp.dir, err)
		}
		return n, b.err
	}
	written := 0
	for written < len(p) {
		off := int(b.size % ChunkSize)
		if off == 0 {
			if !b.takeChunk() {
				if b.noSpill {
					return written, b.noRoom()
				}
				if err := b.spill(); err != nil {
					return written, err
				}
				n, err := b.Write(p[written:])
				return written + n, err
			}
			b.chunks = append(b.chunks, chunkPool.Get().(*[ChunkSize]byte))
		}
		n := copy(b.chunks[len(b.chunks)-1][off:], p[written:])
		written += n
		b.size += int64(n)
	}
	return written, nil
}

// ReadFrom appends everything r yields, reading straight into the
// Buffer's memory while it has some.
func (b *Buffer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for b.file == nil {
		if b.closed {
			return total, ErrClosed
		}
		if b.err != nil {
			return total, b.err
		}
		off := int(b.size % ChunkSize)
		if off == 0 {
			if b.toFile || !b.takeChunk() {
				if b.noSpill {
					return total, b.noRoom()
				}
				if err := b.spill(); err != nil {
					return total, err
				}
				break
			}
			b.chunks = append(b.chunks, chunkPool.Get().(*[ChunkSize]byte))
		}
		n, err := r.Read(b.chunks[len(b.chunks)-1][off:])
		b.size += int64(n)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
	n, err := io.Copy(onlyWriter{b}, r)
	return total + n, err
}

// onlyWriter hides ReadFrom, so that io.Copy does not recurse.
type onlyWriter struct{ io.Writer }

// spill moves the Buffer to a file and gives its memory back.
func (b *Buffer) spill() error {
	f, err := b.sp.createFile()
	if err != nil {
		b.err = fmt.Errorf("%w: %w", ErrWrite, err)
		return b.err
	}
	var written int64
	for i, c := range b.chunks {
		n := int64(ChunkSize)
		if i == len(b.chunks)-1 {
			n = b.size - written
		}
		if _, err := f.f.Write(c[:n]); err != nil {
			f.close()
			b.err = fmt.Errorf("%w in %s: %w", ErrWrite, b.sp.dir, err)
			return b.err
		}
		written += n
	}
	b.freeChunks()
	b.file = f
	b.toFile = false
	b.sp.spilled.Add(1)
	return nil
}

func (b *Buffer) freeChunks() {
	for _, c := range b.chunks {
		chunkPool.Put(c)
	}
	b.sp.release(int64(len(b.chunks)) * ChunkSize)
	b.chunks = nil
}

// Err returns the first error writing met, after which the Buffer holds
// less than was written to it.
func (b *Buffer) Err() error { return b.err }

// Size returns the number of bytes written.
func (b *Buffer) Size() int64 { return b.size }

// InMemory reports whether the Buffer is held in memory.
func (b *Buffer) InMemory() bool { return b.file == nil }

// ReadAt implements io.ReaderAt.
func (b *Buffer) ReadAt(p []byte, off int64) (int, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, ErrClosed
	}
	if off < 0 {
		return 0, errors.New("spool: negative offset")
	}
	if off >= b.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := b.size - off; int64(want) > rest {
		p = p[:rest]
	}
	var n int
	var err error
	if b.file != nil {
		n, err = b.file.f.ReadAt(p, off)
	} else {
		for n < len(p) {
			c := b.chunks[(off+int64(n))/ChunkSize]
			n += copy(p[n:], c[(off+int64(n))%ChunkSize:])
		}
	}
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

// Open returns a reader over the whole Buffer.
func (b *Buffer) Open() io.Reader { return io.NewSectionReader(b, 0, b.size) }

// Close releases the Buffer's memory or file; it may be called more than once.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.freeChunks()
	b.sp.release(b.reserved)
	b.reserved = 0
	if b.file != nil {
		return b.file.close()
	}
	return nil
}
