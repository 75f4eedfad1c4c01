// Package verdictcache remembers what the filter chain decided about a
// message (a filter.Decision, never the message), so that a message seen
// before (left on the server, on a second device, TOP then RETR, a retry)
// is not scanned again. Keys are hashed, so no backend holds a user name
// or a host in clear; an entry is used only for a message with the SHA-256
// it was recorded for, which makes a reused or changed unique-id (RFC 1939
// §7) harmless. Every entry expires after the TTL.
//
// A Cache fronts a Backend (Memory, or Redis for several proxies sharing
// decisions) and never fails its caller: a backend that errs or takes
// longer than the timeout is a miss, logged at most once a minute.
package verdictcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
)

// Defaults of the cache keys of the configuration.
const (
	DefaultTTL        = time.Hour
	DefaultMaxEntries = 100000
	// DefaultTimeout bounds each backend call: a cache slower than a scan is worse than none.
	DefaultTimeout = 100 * time.Millisecond
)

// Backend stores entries. Its methods are called concurrently; an
// Entry it returns is not changed by anyone.
type Backend interface {
	// Get returns the entry under key, or false; one that does not decode is an error.
	Get(ctx context.Context, key string) (Entry, bool, error)
	// GetMany returns the entries of keys in order, nil where absent or undecodable.
	GetMany(ctx context.Context, keys []string) ([]*Entry, error)
	// Set stores e under key for ttl.
	Set(ctx context.Context, key string, e Entry, ttl time.Duration) error
	Close() error
}

// local backends (no I/O) need no timeout: a timer per lookup cost a tenth of a cached RETR.
type local interface{ local() }

// Key says which message an Entry is about.
type Key struct {
	Upstream    string // host:port
	User        string // at the upstream
	UID         string // the unique-id (UIDL)
	Fingerprint string // filter.Chain.Fingerprint
	Generation  string // filter.Chain.Generation
}

// ID is the backend key: a hash of all fields.
func (k Key) ID() string {
	h := sha256.New()
	for _, f := range []string{"pop3proxy verdict", k.Upstream, k.User, k.UID, k.Fingerprint, k.Generation} {
		fmt.Fprintf(h, "%d:%s\x00", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Entry is a decision and what it applies to.
type Entry struct {
	// Digest is the SHA-256 of the message's bytes (CRLF, dot-stuffing
	// undone); the Decision applies only to a message with this digest.
	Digest [32]byte
	// HeaderHash is the SHA-256 of its header section, which a TOP answer shares.
	HeaderHash [32]byte
	// Size is the message's size, Delivered that of what the Decision delivers
	// (Size for a refusal), which LIST and STAT report (RFC 1939 §5).
	Size, Delivered int64
	Decision        filter.Decision
}

// entryVersion changes with the encoding; other versions are misses.
const entryVersion = 1

type entryWire struct {
	V          int             `json:"v"`
	Digest     string          `json:"digest"`
	HeaderHash string          `json:"header"`
	Size       int64           `json:"size"`
	Delivered  int64           `json:"delivered"`
	Decision   json.RawMessage `json:"decision"`
}

// Encode returns the bytes a Backend stores.
func (e *Entry) Encode() ([]byte, error) {
	d, err := e.Decision.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(entryWire{V: entryVersion, Digest: hex.EncodeToString(e.Digest[:]),
		HeaderHash: hex.EncodeToString(e.HeaderHash[:]), Size: e.Size, Delivered: e.Delivered, Decision: d})
}

// Decode reads what Encode made, and refuses anything else.
func Decode(b []byte) (Entry, error) {
	var w entryWire
	var e Entry
	if err := json.Unmarshal(b, &w); err != nil {
		return e, fmt.Errorf("verdictcache: decoding an entry: %w", err)
	}
	if w.V != entryVersion {
		return e, fmt.Errorf("verdictcache: entry version %d, want %d", w.V, entryVersion)
	}
	if err := unhex(e.Digest[:], w.Digest); err != nil {
		return e, err
	}
	if err := unhex(e.HeaderHash[:], w.HeaderHash); err != nil {
		return e, err
	}
	if w.Size < 0 || w.Delivered < 0 {
		return e, errors.New("verdictcache: negative size in an entry")
	}
	e.Size, e.Delivered = w.Size, w.Delivered
	if err := e.Decision.UnmarshalBinary(w.Decision); err != nil {
		return e, err
	}
	return e, nil
}

func unhex(dst []byte, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(dst) {
		return fmt.Errorf("verdictcache: bad hash %q in an entry", s)
	}
	copy(dst, b)
	return nil
}

// Options configures a Cache.
type Options struct {
	TTL     time.Duration // DefaultTTL when zero
	Timeout time.Duration // per backend call; DefaultTimeout when zero
	Logger  *zap.Logger
}

// Cache fronts a Backend, safe for concurrent use; a nil *Cache is off: every lookup misses.
type Cache struct {
	b       Backend
	ttl     time.Duration
	timeout time.Duration
	log     *zap.Logger

	lastLog atomic.Int64 // unix nanoseconds of the last failure logged
	failed  atomic.Int64 // failures since then

	hits, misses, errs atomic.Int64
}

// New returns a Cache in front of b.
func New(b Backend, opts Options) *Cache {
	c := &Cache{b: b, ttl: opts.TTL, timeout: opts.Timeout, log: opts.Logger}
	if c.ttl <= 0 {
		c.ttl = DefaultTTL
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	return c
}

// TTL returns how long entries live.
func (c *Cache) TTL() time.Duration { return c.ttl }

// Stats counts lookups since New.
type Stats struct {
	Hits, Misses, Errors int64
}

// Stats returns the lookup and failure counts (GetMany counts each key).
func (c *Cache) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Errors: c.errs.Load()}
}

// Get returns the entry under k, or false (absent, undecodable, backend failure).
func (c *Cache) Get(ctx context.Context, k Key) (Entry, bool) {
	if c == nil {
		return Entry{}, false
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	e, ok, err := c.b.Get(ctx, k.ID())
	if err != nil {
		c.fail("get", err)
		c.misses.Add(1)
		return Entry{}, false
	}
	if !ok {
		c.misses.Add(1)
		return Entry{}, false
	}
	c.hits.Add(1)
	return e, true
}

// bound limits a backend call to the timeout.
func (c *Cache) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := c.b.(local); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// manyChunk keys per backend call: a mailbox's worth in one MGET could outlast the timeout.
const manyChunk = 500

// GetMany returns the entries of keys, nil where missed (a failed chunk misses).
func (c *Cache) GetMany(ctx context.Context, keys []Key) []*Entry {
	out := make([]*Entry, len(keys))
	if c == nil {
		return out
	}
	for start := 0; start < len(keys); start += manyChunk {
		end := min(start+manyChunk, len(keys))
		ids := make([]string, end-start)
		for i, k := range keys[start:end] {
			ids[i] = k.ID()
		}
		cctx, cancel := c.bound(ctx)
		vals, err := c.b.GetMany(cctx, ids)
		cancel()
		if err == nil && len(vals) != len(ids) {
			err = fmt.Errorf("%d values for %d keys", len(vals), len(ids))
		}
		if err != nil {
			c.fail("get many", err)
			c.misses.Add(int64(len(ids)))
			continue
		}
		for i, e := range vals {
			if e == nil {
				c.misses.Add(1)
				continue
			}
			c.hits.Add(1)
			out[start+i] = e
		}
	}
	return out
}

// Put stores e under k for the TTL; a failure is logged, never returned.
func (c *Cache) Put(ctx context.Context, k Key, e Entry) {
	if c == nil {
		return
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	if err := c.b.Set(ctx, k.ID(), e, c.ttl); err != nil {
		c.fail("set", err)
	}
}

// Close closes the backend.
func (c *Cache) Close() error {
	if c == nil {
		return nil
	}
	return c.b.Close()
}

// logEvery: Redis being down would otherwise log one line per message.
const logEvery = time.Minute

// fail counts a backend failure and logs it with the number since the last
// log line. Keys are never logged.
func (c *Cache) fail(op string, err error) {
	c.errs.Add(1)
	n := c.failed.Add(1)
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if last != 0 && now-last < int64(logEvery) {
		return
	}
	if !c.lastLog.CompareAndSwap(last, now) {
		return
	}
	c.failed.Add(-n)
	c.log.Warn("verdict cache unavailable; messages are scanned as if not cached",
		zap.String("op", op), zap.Int64("failures", n), zap.Error(err))
}
