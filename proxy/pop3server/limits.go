package pop3server

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

const (
	failureMemory = 15 * time.Minute
	// maxTrackedIPs bounds the tables keyed by client IP, so that a
	// client cycling through addresses costs bounded memory.
	maxTrackedIPs    = 10000
	limitLogInterval = time.Minute
)

// Names of limits in logs.
const (
	limitConns          = "max_connections"
	limitConnsPerIP     = "max_connections_per_ip"
	limitFailedLoginCap = "max_failed_login_delay"
	limitBadCommands    = "max_bad_commands"
)

// SYS/TEMP tells the client to retry later without bothering the user
// (RFC 3206 §4).
var (
	errTooManyConns       = &Error{Code: "SYS/TEMP", Message: "too many connections"}
	errTooManyConnsFromIP = &Error{Code: "SYS/TEMP", Message: "too many connections from your address"}
)

func (c *config) checkLimits(fail func(format string, args ...any)) {
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if c.FailedLoginDelay == 0 {
		c.FailedLoginDelay = DefaultFailedLoginDelay
	}
	switch {
	case c.MaxFailedLoginDelay == 0:
		c.MaxFailedLoginDelay = DefaultMaxFailedLoginDelay
	case c.MaxFailedLoginDelay < 0:
		fail("MaxFailedLoginDelay must not be negative")
		return
	}
	if c.FailedLoginDelay > c.MaxFailedLoginDelay {
		fail("MaxFailedLoginDelay %v is below FailedLoginDelay %v", c.MaxFailedLoginDelay, c.FailedLoginDelay)
	}
}

// clientIP returns the zero Addr for addresses without an IP (Unix
// sockets, net.Pipe), and IPv4-mapped IPv6 addresses as IPv4.
func clientIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case nil:
		return netip.Addr{}
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// clientKey groups client addresses for the per-address limits: IPv4 per
// address, IPv6 per /64. RFC 4291 §2.5.1 makes a /64 the size of an IPv6
// subnet, the least an end site is given (RFC 6177), and a host may take
// any address in it (temporary addresses, RFC 8981), so counting single
// IPv6 addresses would limit nothing. The zero Addr gives the invalid zero
// Prefix: no limit.
func clientKey(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64)
	return p
}

func keyString(k netip.Prefix) string {
	if k.Addr().Is4() {
		return k.Addr().String()
	}
	return k.String()
}

// connLimiter counts in two steps: the total before anything is read from
// the client, the per-address count once the address is known.
type connLimiter struct {
	max, maxPerIP int // negative: unlimited

	mu    sync.Mutex
	total int
	perIP map[netip.Prefix]int // only keys with open connections
}

// setLimits changes the limits for the next acquire; slots already taken
// are kept, even over a lowered limit.
func (l *connLimiter) setLimits(max, maxPerIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max, l.maxPerIP = max, maxPerIP
}

func (l *connLimiter) acquire() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max >= 0 && l.total >= l.max {
		return false
	}
	l.total++
	return true
}

func (l *connLimiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
}

func (l *connLimiter) acquireIP(key netip.Prefix) bool {
	if !key.IsValid() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxPerIP >= 0 && l.perIP[key] >= l.maxPerIP {
		return false
	}
	l.perIP[key]++
	return true
}

func (l *connLimiter) releaseIP(key netip.Prefix) {
	if !key.IsValid() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.perIP[key] - 1; n > 0 {
		l.perIP[key] = n
	} else {
		delete(l.perIP, key)
	}
}

// failureTable counts failed logins per client key, forgotten after
// failureMemory without failures, never on a successful login (see
// Options.FailedLoginDelay). Entries are kept in order of their last
// failure, so expired ones are pruned from the front and, when full, the
// one idle longest is evicted. Each connection turns a count into a delay
// with its own options, so counts outlive Server.Reconfigure.
type failureTable struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]*list.Element // of *failureEntry
	order   list.List                      // least recently failed first
}

type failureEntry struct {
	key   netip.Prefix
	count int
	last  time.Time
}

func newFailureTable() *failureTable {
	return &failureTable{now: time.Now, entries: make(map[netip.Prefix]*list.Element)}
}

// fail records a failed login of key and returns how many it has had.
func (t *failureTable) fail(key netip.Prefix) int {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
	var e *failureEntry
	if el, ok := t.entries[key]; ok {
		e = el.Value.(*failureEntry)
		t.order.MoveToBack(el)
	} else {
		if t.order.Len() >= maxTrackedIPs {
			oldest := t.order.Front()
			delete(t.entries, oldest.Value.(*failureEntry).key)
			t.order.Remove(oldest)
		}
		e = &failureEntry{key: key}
		t.entries[key] = t.order.PushBack(e)
	}
	e.count++
	e.last = now
	return e.count
}

func (t *failureTable) pruneLocked(now time.Time) {
	for el := t.order.Front(); el != nil; el = t.order.Front() {
		e := el.Value.(*failureEntry)
		if now.Sub(e.last) < failureMemory {
			return
		}
		delete(t.entries, e.key)
		t.order.Remove(el)
	}
}

func (t *failureTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.order.Len()
}

func failedLoginDelay(n int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// limitLog logs the first hit per limit and client IP at once; later ones
// within limitLogInterval are counted and reported with the next entry
// after it, or by a summary when a later hit of any key sweeps the table.
type limitLog struct {
	log *zap.Logger
	now func() time.Time

	mu        sync.Mutex
	keys      map[limitKey]*limitState
	lastSweep time.Time
}

type limitKey struct {
	limit string
	ip    netip.Prefix // zero for limits of all clients, and for overflow
}

type limitState struct {
	logged     time.Time
	suppressed int
}

func newLimitLog(log *zap.Logger) *limitLog {
	return &limitLog{log: log, now: time.Now, keys: make(map[limitKey]*limitState)}
}

// setLogger changes the logger of the summaries.
func (l *limitLog) setLogger(log *zap.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = log
}

// hit records a hit of limit by key ip and logs msg to log (see limitLog).
func (l *limitLog) hit(log *zap.Logger, limit string, ip netip.Prefix, msg string, fields ...zap.Field) {
	now := l.now()
	l.mu.Lock()
	key := limitKey{limit: limit, ip: ip}
	st, ok := l.keys[key]
	if !ok && len(l.keys) >= maxTrackedIPs {
		// Full: every further address shares one key per limit.
		key.ip = netip.Prefix{}
		st, ok = l.keys[key]
	}
	logNow := !ok || now.Sub(st.logged) >= limitLogInterval
	suppressed := 0
	if !logNow {
		st.suppressed++
	} else {
		if ok {
			suppressed = st.suppressed
		}
		l.keys[key] = &limitState{logged: now}
	}
	var summaries [][]zap.Field
	if now.Sub(l.lastSweep) >= limitLogInterval {
		summaries = l.sweepLocked(now)
	}
	summaryLog := l.log
	l.mu.Unlock()

	for _, f := range summaries {
		summaryLog.Warn("limit hit again", f...)
	}
	if logNow {
		fields = append(fields, zap.String("limit", limit))
		if suppressed > 0 {
			fields = append(fields, zap.Int("suppressed", suppressed))
		}
		log.Warn(msg, fields...)
	}
}

// sweepLocked drops the keys whose interval is over.
func (l *limitLog) sweepLocked(now time.Time) (summaries [][]zap.Field) {
	l.lastSweep = now
	for key, st := range l.keys {
		if now.Sub(st.logged) < limitLogInterval {
			continue
		}
		delete(l.keys, key)
		if st.suppressed > 0 {
			f := []zap.Field{zap.String("limit", key.limit), zap.Int("suppressed", st.suppressed)}
			if key.ip.IsValid() {
				f = append(f, zap.String("ip", keyString(key.ip)))
			}
			summaries = append(summaries, f)
		}
	}
	return summaries
}

// loginFailed applies the failed-login delay and reports whether to answer.
// Clients without an IP address are delayed by their own connection's
// failures. A delay that would outlast authDeadline ends there without an
// answer and closes the connection: the client could read no further
// command anyway, and an answer at the deadline, before the delay, would
// let a client guess faster by sending each password just before it.
func (c *conn) loginFailed() bool {
	base, maxDelay := c.cfg.FailedLoginDelay, c.cfg.MaxFailedLoginDelay
	if base <= 0 {
		return true // no delay configured
	}
	n := 0
	if c.key.IsValid() {
		n = c.srv.failures.fail(c.key)
	} else {
		c.failedLogins++
		n = c.failedLogins
	}
	d := failedLoginDelay(n, base, maxDelay)
	if d >= maxDelay {
		c.srv.limitLog.hit(c.log, limitFailedLoginCap, c.key, "failed-login delay at its maximum",
			zap.Duration("delay", d))
	}
	wait, answer := d, true
	if left := time.Until(c.authDeadline); left < d {
		wait, answer = max(left, 0), false
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		if !answer {
			c.quit = endWith(SessionTimeout, "login timeout")
		}
		return answer
	case <-c.drainCtx.Done():
		return true
	}
}
