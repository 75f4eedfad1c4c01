package verdictcache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisOptions says where a Redis backend is.
type RedisOptions struct {
	Address   string // host:port
	Password  string // AUTH; "" for none
	DB        int    // SELECT
	KeyPrefix string // in front of every key, to share a Redis with others
	// Timeout bounds dialling and I/O (DefaultTimeout when zero); so does the Cache's.
	Timeout time.Duration
}

// Redis is a Backend in a Redis server (or one that speaks its protocol),
// shared by several proxies behind a load balancer. Entries are stored
// with SET EX; set a maxmemory policy (allkeys-lru) on a Redis of its own.
// A Redis that is down or slow fails calls quickly; the client reconnects.
type Redis struct {
	c      *redis.Client
	prefix string
}

// quietRedis silences go-redis's log, which writes to standard error on
// every failed dial; the Cache logs failures itself (logEvery).
var quietRedis = sync.OnceFunc(func() { redis.SetLogger(voidLogger{}) })

type voidLogger struct{}

func (voidLogger) Printf(context.Context, string, ...any) {}

// NewRedis returns a Redis backend; it connects lazily: Redis may start after the proxy.
func NewRedis(o RedisOptions) *Redis {
	quietRedis()
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	c := redis.NewClient(&redis.Options{
		Addr:     o.Address,
		Password: o.Password,
		DB:       o.DB,
		// A failed call is a cache miss: retrying it would only delay the
		// scan that has to happen anyway.
		MaxRetries:            -1,
		DialerRetries:         1,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		// Redis Enterprise's maintenance notices do not concern a cache
		// whose every call may fail.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	return &Redis{c: c, prefix: o.KeyPrefix}
}

// Get implements Backend.
func (r *Redis) Get(ctx context.Context, key string) (Entry, bool, error) {
	b, err := r.c.Get(ctx, r.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("redis GET: %w", err)
	}
	e, err := Decode(b)
	if err != nil {
		return Entry{}, false, err
	}
	return e, true, nil
}

// GetMany implements Backend with one MGET.
func (r *Redis) GetMany(ctx context.Context, keys []string) ([]*Entry, error) {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = r.prefix + k
	}
	vals, err := r.c.MGet(ctx, full...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis MGET: %w", err)
	}
	out := make([]*Entry, len(vals))
	for i, v := range vals {
		if s, ok := v.(string); ok {
			if e, err := Decode([]byte(s)); err == nil {
				out[i] = &e
			}
		}
	}
	return out, nil
}

// Set implements Backend with SET EX.
func (r *Redis) Set(ctx context.Context, key string, e Entry, ttl time.Duration) error {
	val, err := e.Encode()
	if err != nil {
		return err
	}
	if err := r.c.Set(ctx, r.prefix+key, val, ttl).Err(); err != nil {
		return fmt.Errorf("redis SET: %w", err)
	}
	return nil
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis PING: %w", err)
	}
	return nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.c.Close() }
