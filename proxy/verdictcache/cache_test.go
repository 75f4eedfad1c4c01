package verdictcache_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache/redistest"
)

func entry(n byte) verdictcache.Entry {
	return verdictcache.Entry{
		Digest: [32]byte{n}, HeaderHash: [32]byte{n, n}, Size: 100 + int64(n), Delivered: 130 + int64(n),
		Decision: filter.Decision{Outcome: filter.Deliver, Edits: [][]filter.Edit{{filter.Add("X-Scanned", fmt.Sprint(n))}}},
	}
}

func key(uid string) verdictcache.Key {
	return verdictcache.Key{Upstream: "pop.example.com:110", User: "alice", UID: uid, Fingerprint: "fp", Generation: "gen"}
}

func sameEntry(t *testing.T, got, want verdictcache.Entry) {
	t.Helper()
	if got.Digest != want.Digest || got.HeaderHash != want.HeaderHash || got.Size != want.Size || got.Delivered != want.Delivered ||
		fmt.Sprint(got.Decision) != fmt.Sprint(want.Decision) {
		t.Errorf("entry = %+v, want %+v", got, want)
	}
}

// TestKeyHidesNames: a backend key names no user and no host, and every
// field of the Key changes it.
func TestKeyHidesNames(t *testing.T) {
	k := key("uid-1")
	id := k.ID()
	if strings.Contains(id, "alice") || strings.Contains(id, "example") {
		t.Errorf("key %q names the user or host", id)
	}
	for _, o := range []verdictcache.Key{
		{Upstream: "pop.example.com:995", User: k.User, UID: k.UID, Fingerprint: k.Fingerprint, Generation: k.Generation},
		{Upstream: k.Upstream, User: "bob", UID: k.UID, Fingerprint: k.Fingerprint, Generation: k.Generation},
		{Upstream: k.Upstream, User: k.User, UID: "uid-2", Fingerprint: k.Fingerprint, Generation: k.Generation},
		{Upstream: k.Upstream, User: k.User, UID: k.UID, Fingerprint: "fp2", Generation: k.Generation},
		{Upstream: k.Upstream, User: k.User, UID: k.UID, Fingerprint: k.Fingerprint, Generation: "gen2"},
		// Fields do not run into each other.
		{Upstream: k.Upstream, User: k.User + "u", UID: "id-1", Fingerprint: k.Fingerprint, Generation: k.Generation},
	} {
		if o.ID() == id {
			t.Errorf("%+v has the key of %+v", o, k)
		}
	}
}

// TestMemoryBackend: entries come back as stored, expire after the TTL,
// and the least recently used go first beyond max_entries; an entry of
// another generation is another key, so a new generation misses.
func TestMemoryBackend(t *testing.T) {
	ctx := context.Background()
	m := verdictcache.NewMemory(3)
	c := verdictcache.New(m, verdictcache.Options{TTL: 200 * time.Millisecond})
	for i, uid := range []string{"a", "b", "c"} {
		c.Put(ctx, key(uid), entry(byte(i)))
	}
	got, ok := c.Get(ctx, key("a"))
	if !ok {
		t.Fatal("stored entry missing")
	}
	sameEntry(t, got, entry(0))
	newGen := key("a")
	newGen.Generation = "gen-after-update"
	if _, ok := c.Get(ctx, newGen); ok {
		t.Error("an entry of another generation was found")
	}

	c.Put(ctx, key("d"), entry(3)) // pushes out b, the least recently used
	if m.Len() != 3 {
		t.Errorf("%d entries, want at most 3", m.Len())
	}
	if _, ok := c.Get(ctx, key("b")); ok {
		t.Error("the least recently used entry was kept")
	}
	many := c.GetMany(ctx, []verdictcache.Key{key("a"), key("b"), key("c"), key("d")})
	if many[0] == nil || many[1] != nil || many[2] == nil || many[3] == nil {
		t.Errorf("GetMany = %v, want a, c and d", many)
	}

	time.Sleep(250 * time.Millisecond)
	if _, ok := c.Get(ctx, key("d")); ok {
		t.Error("an entry outlived its TTL")
	}
	if st := c.Stats(); st.Errors != 0 || st.Hits == 0 || st.Misses == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestNilCacheIsOff: a nil Cache misses and stores nothing, without
// failing.
func TestNilCacheIsOff(t *testing.T) {
	var c *verdictcache.Cache
	c.Put(context.Background(), key("a"), entry(1))
	if _, ok := c.Get(context.Background(), key("a")); ok {
		t.Error("a nil cache hit")
	}
	if got := c.GetMany(context.Background(), []verdictcache.Key{key("a")}); len(got) != 1 || got[0] != nil {
		t.Errorf("GetMany = %v", got)
	}
}

// failing is a backend that always fails, slowly or at once.
type failing struct{ delay time.Duration }

func (f failing) wait(ctx context.Context) error {
	select {
	case <-time.After(f.delay):
		return fmt.Errorf("backend broken")
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (f failing) Get(ctx context.Context, _ string) (verdictcache.Entry, bool, error) {
	return verdictcache.Entry{}, false, f.wait(ctx)
}
func (f failing) GetMany(ctx context.Context, _ []string) ([]*verdictcache.Entry, error) {
	return nil, f.wait(ctx)
}
func (f failing) Set(ctx context.Context, _ string, _ verdictcache.Entry, _ time.Duration) error {
	return f.wait(ctx)
}
func (failing) Close() error { return nil }

// TestFailingBackendIsAMiss: a backend that fails or hangs costs at most
// the timeout per call, is a miss, and is logged once however often it
// fails.
func TestFailingBackendIsAMiss(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	c := verdictcache.New(failing{delay: time.Hour}, verdictcache.Options{Timeout: 50 * time.Millisecond, Logger: zap.New(core)})
	start := time.Now()
	for range 4 {
		c.Put(context.Background(), key("a"), entry(1))
		if _, ok := c.Get(context.Background(), key("a")); ok {
			t.Fatal("a failing backend hit")
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("8 calls to a hung backend took %v", took)
	}
	if n := logs.Len(); n != 1 {
		t.Errorf("%d log entries for 8 failures, want 1", n)
	}
	for _, e := range logs.All() {
		if s := fmt.Sprint(e.ContextMap()); strings.Contains(s, "alice") || strings.Contains(s, "example.com") {
			t.Errorf("log names the user or host: %s", s)
		}
	}
	if st := c.Stats(); st.Errors != 8 {
		t.Errorf("stats %+v, want 8 errors", st)
	}
}

// TestRedisBackend: against a real redis-server, entries are stored and
// loaded (with GetMany too), expire after the TTL in Redis itself, are
// stored under the key prefix, and entries of another instance's cache
// on the same Redis are shared. With Redis stopped a lookup is a quick
// miss, not an error; once it is back, the cache works again by itself.
func TestRedisBackend(t *testing.T) {
	r := redistest.Start(t)
	ctx := context.Background()
	core, logs := observer.New(zap.WarnLevel)
	newCache := func(log *zap.Logger) *verdictcache.Cache {
		b := verdictcache.NewRedis(verdictcache.RedisOptions{Address: r.Addr, KeyPrefix: "test:", Timeout: 200 * time.Millisecond})
		t.Cleanup(func() { b.Close() })
		return verdictcache.New(b, verdictcache.Options{TTL: 2 * time.Second, Timeout: 200 * time.Millisecond, Logger: log})
	}
	a, b := newCache(zap.New(core)), newCache(zap.NewNop())

	a.Put(ctx, key("one"), entry(1))
	a.Put(ctx, key("two"), entry(2))
	got, ok := b.Get(ctx, key("one")) // another instance
	if !ok {
		t.Fatal("entry stored by one instance not found by another")
	}
	sameEntry(t, got, entry(1))
	many := b.GetMany(ctx, []verdictcache.Key{key("two"), key("none"), key("one")})
	if many[0] == nil || many[1] != nil || many[2] == nil {
		t.Fatalf("GetMany = %v", many)
	}
	sameEntry(t, *many[0], entry(2))
	if keys, err := r.Keys(); err != nil || len(keys) != 2 || !strings.HasPrefix(keys[0], "test:") {
		t.Errorf("keys in redis: %v, %v", keys, err)
	}

	time.Sleep(2500 * time.Millisecond)
	if _, ok := a.Get(ctx, key("one")); ok {
		t.Error("entry outlived its TTL")
	}

	r.Stop()
	start := time.Now()
	a.Put(ctx, key("three"), entry(3))
	if _, ok := a.Get(ctx, key("three")); ok {
		t.Error("hit with redis stopped")
	}
	if got := a.GetMany(ctx, []verdictcache.Key{key("three")}); got[0] != nil {
		t.Error("GetMany hit with redis stopped")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("three calls with redis stopped took %v", took)
	}
	if logs.Len() != 1 {
		t.Errorf("%d warnings with redis stopped, want 1", logs.Len())
	}

	r.Restart()
	var back bool
	for deadline := time.Now().Add(5 * time.Second); !back && time.Now().Before(deadline); {
		a.Put(ctx, key("four"), entry(4))
		_, back = a.Get(ctx, key("four"))
		if !back {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !back {
		t.Fatal("the cache did not work again after redis came back")
	}
}

// TestConcurrentUse runs the front and the memory backend from many
// goroutines (for the race detector).
func TestConcurrentUse(t *testing.T) {
	c := verdictcache.New(verdictcache.NewMemory(10), verdictcache.Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				k := key(fmt.Sprint((i + j) % 20))
				c.Put(context.Background(), k, entry(byte(j)))
				c.Get(context.Background(), k)
				c.GetMany(context.Background(), []verdictcache.Key{k, key("x")})
			}
		})
	}
	wg.Wait()
}
