package app

import (
	"context"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// CacheConfig is the verdict cache (README, "Scan-ahead and the verdict
// cache").
type CacheConfig struct {
	// Type is memory (this instance only), redis (shared by every
	// instance that names the same Redis) or none.
	Type string `yaml:"type"`
	// TTL is how long a decision is replayed: the bound on how stale a
	// decision of a scanner without a generation (spamd, rspamd) can be.
	TTL yamlconf.Duration `yaml:"ttl"`
	// MaxEntries bounds the memory backend (least recently used first).
	MaxEntries int `yaml:"max_entries"`
	// Address, Password, DB and KeyPrefix say where the redis backend is.
	Address   string `yaml:"address"`
	Password  string `yaml:"password"`
	DB        int    `yaml:"db"`
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds each call to the backend; a slower one is a miss.
	Timeout yamlconf.Duration `yaml:"timeout"`
}

// DefaultScanAhead is scan_ahead's default: two messages ahead keep a
// scanner busy while the client reads, at two extra downloads' cost.
const DefaultScanAhead = 2

// maxScanAhead bounds scan_ahead: every message ahead may hold up to
// max_size of the memory budget and a scanner slot.
const maxScanAhead = 16

func defaultCacheConfig() CacheConfig {
	return CacheConfig{
		Type:       "memory",
		TTL:        yamlconf.Duration(verdictcache.DefaultTTL),
		MaxEntries: verdictcache.DefaultMaxEntries,
		KeyPrefix:  "pop3proxy:verdict:",
		Timeout:    yamlconf.Duration(verdictcache.DefaultTimeout),
	}
}

func (c *Config) validateCache(bad func(path, format string, args ...any)) {
	if c.ScanAhead < 0 || c.ScanAhead > maxScanAhead {
		bad("scan_ahead", "must be between 0 (off) and %d", maxScanAhead)
	}
	k := c.Cache
	switch k.Type {
	case "none", "memory", "redis":
	default:
		bad("cache.type", "%q is not one of memory, redis, none", k.Type)
		return
	}
	if k.Type == "none" {
		return
	}
	positive(bad, "cache.ttl", k.TTL)
	positive(bad, "cache.timeout", k.Timeout)
	if k.Type == "memory" && k.MaxEntries < 1 {
		bad("cache.max_entries", "must be at least 1")
	}
	if k.Type != "redis" {
		for _, f := range []struct {
			key string
			set bool
		}{{"address", k.Address != ""}, {"password", k.Password != ""}, {"db", k.DB != 0}} {
			if f.set {
				bad("cache."+f.key, "is for type: redis only")
			}
		}
		return
	}
	if k.Address == "" {
		bad("cache.address", "is required for type: redis (host:port)")
	} else if _, _, err := net.SplitHostPort(k.Address); err != nil {
		bad("cache.address", "must be host:port: %v", err)
	}
	if k.DB < 0 {
		bad("cache.db", "must not be negative")
	}
}

// newCache builds the verdict cache of cfg, nil for none. It lives as
// long as the process: a reload keeps it (entries of a replaced chain
// stop matching by its fingerprint), and a changed cache section takes a
// restart (restartOnly).
func newCache(cfg *Config, log *zap.Logger) *verdictcache.Cache {
	k := cfg.Cache
	log = log.Named("cache")
	var b verdictcache.Backend
	switch k.Type {
	case "memory":
		b = verdictcache.NewMemory(k.MaxEntries)
		log.Info("verdict cache", zap.String("type", k.Type), zap.Duration("ttl", k.TTL.D()), zap.Int("max_entries", k.MaxEntries))
	case "redis":
		r := verdictcache.NewRedis(verdictcache.RedisOptions{Address: k.Address, Password: k.Password, DB: k.DB,
			KeyPrefix: k.KeyPrefix, Timeout: k.Timeout.D()})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := r.Ping(ctx); err != nil {
			// Not fatal: messages are scanned until Redis answers.
			log.Warn("verdict cache: redis does not answer yet; messages are scanned as if not cached", zap.String("address", k.Address), zap.Error(err))
		}
		cancel()
		b = r
		log.Info("verdict cache", zap.String("type", k.Type), zap.String("address", k.Address), zap.Int("db", k.DB), zap.Duration("ttl", k.TTL.D()))
	default:
		return nil
	}
	return verdictcache.New(b, verdictcache.Options{TTL: k.TTL.D(), Timeout: k.Timeout.D(), Logger: log})
}
