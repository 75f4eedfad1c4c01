package verdictcache

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Memory is a Backend in the proxy's own memory, for one instance: at most
// maxEntries entries, least recently used out first, each until its TTL.
// An entry is a few hundred bytes: the default 100000 cost tens of MB at most.
type Memory struct {
	mu    sync.Mutex
	max   int
	items map[string]*list.Element
	lru   *list.List // front: most recently used
}

type memItem struct {
	key     string
	e       *Entry
	expires time.Time
}

// NewMemory returns a Memory of maxEntries (DefaultMaxEntries when not positive).
func NewMemory(maxEntries int) *Memory {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &Memory{max: maxEntries, items: map[string]*list.Element{}, lru: list.New()}
}

// Len counts entries held, expired ones included until looked up or pushed out.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

// Get implements Backend.
func (m *Memory) Get(_ context.Context, key string) (Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.getLocked(key); e != nil {
		return *e, true, nil
	}
	return Entry{}, false, nil
}

func (m *Memory) getLocked(key string) *Entry {
	el, ok := m.items[key]
	if !ok {
		return nil
	}
	it := el.Value.(*memItem)
	if !time.Now().Before(it.expires) {
		m.lru.Remove(el)
		delete(m.items, key)
		return nil
	}
	m.lru.MoveToFront(el)
	return it.e
}

// GetMany implements Backend.
func (m *Memory) GetMany(_ context.Context, keys []string) ([]*Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Entry, len(keys))
	for i, k := range keys {
		out[i] = m.getLocked(k)
	}
	return out, nil
}

// Set implements Backend, keeping e decoded: cheaper to replay than bytes.
func (m *Memory) Set(_ context.Context, key string, e Entry, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	expires := time.Now().Add(ttl)
	if el, ok := m.items[key]; ok {
		it := el.Value.(*memItem)
		it.e, it.expires = &e, expires
		m.lru.MoveToFront(el)
		return nil
	}
	m.items[key] = m.lru.PushFront(&memItem{key: key, e: &e, expires: expires})
	for m.lru.Len() > m.max {
		old := m.lru.Back()
		m.lru.Remove(old)
		delete(m.items, old.Value.(*memItem).key)
	}
	return nil
}

// Close implements Backend.
func (m *Memory) Close() error { return nil }

func (*Memory) local() {}
