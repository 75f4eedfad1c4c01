package app

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestCacheConfig: the defaults (memory cache of 100000 entries for an
// hour, two messages ahead), and every invalid value reported under its
// key path.
func TestCacheConfig(t *testing.T) {
	cfg, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ScanAhead != 2 || cfg.Cache.Type != "memory" || cfg.Cache.TTL.D() != time.Hour ||
		cfg.Cache.MaxEntries != 100000 || cfg.Cache.Timeout.D() != 100*time.Millisecond {
		t.Errorf("defaults: scan_ahead %d, cache %+v", cfg.ScanAhead, cfg.Cache)
	}
	if c := newCache(cfg, zap.NewNop()); c == nil || c.TTL() != time.Hour {
		t.Errorf("default cache %v", c)
	}
	off, err := ParseConfig([]byte("cache: {type: none}\nscan_ahead: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := newCache(off, zap.NewNop()); c != nil {
		t.Error("type: none made a cache")
	}
	if _, err := ParseConfig([]byte("cache: {type: redis, address: \"127.0.0.1:6379\", password: x, db: 2, key_prefix: \"p:\"}\n")); err != nil {
		t.Errorf("a redis cache: %v", err)
	}

	for doc, want := range map[string][]string{
		"scan_ahead: -1\n":                                 {"scan_ahead: must be between 0 (off) and 16"},
		"scan_ahead: 17\n":                                 {"scan_ahead: must be between"},
		"cache: {type: disk}\n":                            {`cache.type: "disk" is not one of memory, redis, none`},
		"cache: {ttl: 0s, timeout: 0s}\n":                  {"cache.ttl: must be greater than 0", "cache.timeout: must be greater than 0"},
		"cache: {max_entries: 0}\n":                        {"cache.max_entries: must be at least 1"},
		"cache: {address: \"h:1\", db: 1}\n":               {"cache.address: is for type: redis only", "cache.db: is for type: redis only"},
		"cache: {type: redis}\n":                           {"cache.address: is required for type: redis"},
		"cache: {type: redis, address: h}\n":               {"cache.address: must be host:port"},
		"cache: {type: redis, address: \"h:1\", db: -1}\n": {"cache.db: must not be negative"},
		"cache: {typo: memory}\n":                          {"cache.typo"},
	} {
		_, err := ParseConfig([]byte(doc))
		if err == nil {
			t.Errorf("%q accepted", doc)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not say %q", doc, err, w)
			}
		}
	}
}

// TestCacheNeedsRestart: the cache lives across reloads, so a reload that
// changes its section says a restart is needed; scan_ahead applies to new
// sessions at once.
func TestCacheNeedsRestart(t *testing.T) {
	a, _ := ParseConfig(nil)
	b, err := ParseConfig([]byte("cache: {ttl: 2h}\nscan_ahead: 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	changed := changedKeys(a, b)
	if got := restartNeeded(changed); !slices.Equal(got, []string{"cache.ttl"}) {
		t.Errorf("restart needed for %v (changed %v), want cache.ttl", got, changed)
	}
}
