package proxy

// The verdict cache and scan-ahead (README, "Scan-ahead and the verdict
// cache"). Both rest on one rule: a decision is used only for a message
// whose bytes have the SHA-256 it was made for, so they change how fast a
// message is delivered, never what is delivered.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// msgInfo is what the session knows of one message from the listings it
// fetched once (numbers do not change within a session: RFC 1939 §4) and
// from the cache; one per message, sorted by number, 56 octets on 64-bit
// platforms and the unique-id each.
type msgInfo struct {
	num  int
	uid  string // "" when the upstream has no UIDL
	size int64  // from LIST; -1 when not listed
	// cached: the cache has a decision, made for origSize, delivering delivered.
	cached              bool
	origSize, delivered int64
}

// find is called with session.mu held (or before scan-ahead starts).
func (s *session) find(n int) *msgInfo {
	i := sort.Search(len(s.info), func(i int) bool { return s.info[i].num >= n })
	if i < len(s.info) && s.info[i].num == n {
		return &s.info[i]
	}
	return nil
}

// prefetch is one message fetched and scanned ahead of the client.
type prefetch struct {
	msg    int
	ticket *upTicket
	done   chan struct{} // closed when dec is final (nil: none to use)

	// Under session.mu:
	counted   bool // in session.aheadRunning
	skip      bool // the client came first, or deleted the message
	hasDigest bool // downloaded: digest is the SHA-256 of what was scanned
	digest    [32]byte
	dec       *filter.Decision
}

// speedups: the session fetches the listings for the cache or scan-ahead.
func (s *session) speedups() bool {
	return s.g.opts.Chain.Len() > 0 && (s.g.opts.Cache != nil || s.g.opts.ScanAhead > 0)
}

// seen keeps a whole listing the client asked for (UIDL or LIST without
// an argument), so that prepare need not ask for it again.
func (s *session) seen(list []upstream.MessageInfo, uidl bool) {
	if s.prepared || !s.speedups() {
		return
	}
	if uidl {
		s.seenUidl = list
	} else {
		s.seenList = list
	}
}

// prepare reads the UIDL and LIST listings once per session, and the
// cache's entries for every listed message in a few batched lookups, in
// the connection's goroutine with the upstream held. An upstream without
// UIDL (-ERR) gets no cache for this session, one without LIST no
// scan-ahead.
func (s *session) prepare(ctx context.Context) error {
	if s.prepared || !s.speedups() {
		return nil
	}
	var se *upstream.ServerError
	uidl, list := s.seenUidl, s.seenList
	if uidl == nil {
		var err error
		if uidl, err = s.client.Uidl(0); err != nil && !errors.As(err, &se) {
			return relayError(err)
		}
	}
	if list == nil {
		var err error
		if list, err = s.client.List(0); err != nil && !errors.As(err, &se) {
			return relayError(err)
		}
	}
	s.prepared, s.seenUidl, s.seenList = true, nil, nil
	info := make([]msgInfo, 0, max(len(list), len(uidl)))
	for _, m := range list {
		info = append(info, msgInfo{num: m.Number, size: m.Size})
	}
	sort.Slice(info, func(i, j int) bool { return info[i].num < info[j].num })
	s.mu.Lock()
	s.info = info
	// A message the client deleted after its UIDL is in uidl, not in list;
	// it goes in after the loop, because find searches a sorted s.info.
	var uidlOnly []msgInfo
	for _, m := range uidl {
		if mi := s.find(m.Number); mi != nil {
			mi.uid = m.UID
		} else {
			uidlOnly = append(uidlOnly, msgInfo{num: m.Number, uid: m.UID, size: -1})
		}
	}
	if len(uidlOnly) > 0 {
		s.info = append(s.info, uidlOnly...)
		sort.Slice(s.info, func(i, j int) bool { return s.info[i].num < s.info[j].num })
	}
	s.mu.Unlock()
	if s.g.opts.Cache == nil || len(uidl) == 0 {
		return nil
	}
	gen, err := s.g.opts.Chain.Generation(ctx)
	if err != nil {
		s.log.Debug("no cached decisions for this listing: the filters' generation is unknown", zap.Error(err))
		return nil
	}
	nums := make([]int, 0, len(uidl))
	keys := make([]verdictcache.Key, 0, len(uidl))
	for _, m := range uidl {
		nums = append(nums, m.Number)
		keys = append(keys, s.key(m.UID, gen))
	}
	found := s.g.opts.Cache.GetMany(ctx, keys)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range found {
		if mi := s.find(nums[i]); e != nil && mi != nil {
			mi.cached, mi.origSize, mi.delivered = true, e.Size, e.Delivered
		}
	}
	return nil
}

func (s *session) key(uid, gen string) verdictcache.Key {
	return verdictcache.Key{Upstream: s.client.Addr(), User: s.user, UID: uid,
		Fingerprint: s.g.opts.Chain.Fingerprint(), Generation: gen}
}

// uid returns the unique-id of msg, "" when unknown.
func (s *session) uid(msg int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mi := s.find(msg); mi != nil {
		return mi.uid
	}
	return ""
}

// deliveredSize is what LIST and STAT report (RFC 1939 §5; see List).
func (s *session) deliveredSize(msg int, listed int64) int64 {
	if mi := s.find(msg); mi != nil && mi.cached && mi.origSize == listed {
		return mi.delivered
	}
	return listed
}

// statDelta is what STAT's total changes by (see deliveredSize).
func (s *session) statDelta() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d int64
	for _, mi := range s.info {
		if !s.deleted[mi.num] && mi.size >= 0 && mi.cached && mi.origSize == mi.size {
			d += mi.delivered - mi.size
		}
	}
	return d
}

func digestOf(h hash.Hash) (d [32]byte) {
	h.Sum(d[:0])
	return d
}

// headerHash hashes m's header section (filter.HeaderSectionSize).
func headerHash(m *filter.Message) ([32]byte, error) {
	n, err := filter.HeaderSectionSize(m)
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(m, 0, n)); err != nil {
		return [32]byte{}, err
	}
	return digestOf(h), nil
}

// takeAhead returns and forgets msg's scan-ahead if it downloaded the
// message, or tells it to skip. The upstream is held, so no download of
// msg is under way.
func (s *session) takeAhead(msg int) *prefetch {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.ahead[msg]
	if p == nil {
		return nil
	}
	delete(s.ahead, msg)
	// No longer ahead of the client: room for the next.
	if p.counted {
		p.counted = false
		s.aheadRunning--
	}
	if !p.hasDigest {
		p.skip = true
		return nil
	}
	return p
}

// decide runs the chain over m or replays a decision made for the same
// digest: by a scan-ahead, the cache, or another session's scan running
// now. Whatever the chain runs is stored for the next time.
func (s *session) decide(ctx context.Context, m *filter.Message, digest [32]byte, ahead *prefetch) *filter.Result {
	ch := s.g.opts.Chain
	if ahead != nil {
		select {
		case <-ahead.done:
		case <-ctx.Done():
			return &filter.Result{Outcome: filter.TempFail, Reason: tempfailText} // the client is gone
		}
		s.mu.Lock()
		dec, same := ahead.dec, ahead.digest == digest
		s.mu.Unlock()
		if dec != nil && same {
			s.log.Debug("decision from scan-ahead", zap.Int("msg", m.Meta.Number))
			return ch.Replay(ctx, m, dec)
		}
	}
	return s.decideCached(ctx, m, digest)
}

// decideCached is decide without the scan-ahead.
func (s *session) decideCached(ctx context.Context, m *filter.Message, digest [32]byte) *filter.Result {
	ch := s.g.opts.Chain
	cache := s.g.opts.Cache
	msg := m.Meta.Number
	if cache == nil || m.Meta.UID == "" {
		s.g.stats.Scanned.Add(1)
		return ch.Run(ctx, m)
	}
	gen, err := ch.Generation(ctx)
	if err != nil {
		// A scanner that cannot say which signatures it has would fail
		// the scan too; the chain's on_error decides.
		s.log.Debug("verdict cache skipped: the filters' generation is unknown", zap.Int("msg", msg), zap.Error(err))
		s.g.stats.Scanned.Add(1)
		return ch.Run(ctx, m)
	}
	k := s.key(m.Meta.UID, gen)
	if e, ok := cache.Get(ctx, k); ok && e.Digest == digest {
		s.log.Debug("decision from the verdict cache", zap.Int("msg", msg))
		return ch.Replay(ctx, m, &e.Decision)
	}
	fk := k.ID() + hex.EncodeToString(digest[:])
	for {
		f, leader := s.g.board(fk)
		if leader {
			break
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return &filter.Result{Outcome: filter.TempFail, Reason: tempfailText}
		}
		if f.dec != nil {
			s.log.Debug("decision from a scan of the same message in another session", zap.Int("msg", msg))
			return ch.Replay(ctx, m, f.dec)
		}
		// That scan failed or its session ended: scan here.
	}
	var dec *filter.Decision
	defer func() { s.g.land(fk, dec) }() // whatever happens, nobody waits for nothing
	s.g.stats.Scanned.Add(1)
	res := ch.Run(ctx, m)
	if dec = res.Decision; dec != nil {
		s.store(ctx, k, m, digest, res)
	}
	return res
}

// store puts a run's decision into the cache and notes it for LIST.
func (s *session) store(ctx context.Context, k verdictcache.Key, m *filter.Message, digest [32]byte, res *filter.Result) {
	hh, err := headerHash(m)
	if err != nil {
		return
	}
	e := verdictcache.Entry{Digest: digest, HeaderHash: hh, Size: m.Size(), Delivered: m.Size(), Decision: *res.Decision}
	if res.Outcome == filter.Deliver {
		e.Delivered = res.Message.Size()
	}
	// Stored even when the session is ending: the decision is made.
	s.g.opts.Cache.Put(context.WithoutCancel(ctx), k, e)
	s.mu.Lock()
	if mi := s.find(m.Meta.Number); mi != nil {
		mi.cached, mi.origSize, mi.delivered = true, e.Size, e.Delivered
	}
	s.mu.Unlock()
}

// flight is a scan under way for one cache key and digest, so a message
// is never scanned twice at once (client and scan-ahead, two devices).
type flight struct {
	done chan struct{}
	dec  *filter.Decision // set before done is closed
}

// board returns the flight for key, and whether the caller is to make it
// (leader) and then land it.
func (g *Gateway) board(key string) (*flight, bool) {
	g.flightsMu.Lock()
	defer g.flightsMu.Unlock()
	if f := g.flights[key]; f != nil {
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	if g.flights == nil {
		g.flights = map[string]*flight{}
	}
	g.flights[key] = f
	return f, true
}

// land ends the flight for key with its decision (nil: none usable).
func (g *Gateway) land(key string, dec *filter.Decision) {
	g.flightsMu.Lock()
	f := g.flights[key]
	delete(g.flights, key)
	g.flightsMu.Unlock()
	if f != nil {
		f.dec = dec
		close(f.done)
	}
}

// topFromCache answers TOP msg lines of a cached message with the same TOP
// upstream: a headers-only client (docs/clients.md, Thunderbird) then
// costs a TOP, not a download and a scan. The decision is replayed if the
// header section hashes as the message's did; edits touch only the
// header, so the result is the normal path's, cut. ok is false, with the
// upstream still held, when the caller must take the normal path.
func (s *session) topFromCache(ctx context.Context, msg, lines int, hold *upHold) (_ *pop3server.Message, _ error, ok bool) {
	cache, ch := s.g.opts.Cache, s.g.opts.Chain
	uid := s.uid(msg)
	if cache == nil || uid == "" {
		return nil, nil, false
	}
	gen, err := ch.Generation(ctx)
	if err != nil {
		return nil, nil, false
	}
	e, found := cache.Get(ctx, s.key(uid, gen))
	if !found {
		return nil, nil, false
	}
	m, err := s.client.Top(msg, lines)
	if err != nil {
		hold.Close()
		return nil, relayError(err), true
	}
	max := s.g.opts.MaxSize
	buf := s.g.spool.NewBuffer(0)
	n, err := buf.ReadFrom(io.LimitReader(m, max+1))
	if err == nil && n > max {
		// Longer than any message the entry can be for: drain it and
		// take the normal path, which decides on the whole message.
		_, err = io.Copy(io.Discard, m)
		if err == nil {
			buf.Close()
			return nil, nil, false
		}
	}
	if err != nil {
		buf.Close()
		m.Close()
		hold.Close()
		if errors.Is(err, spool.ErrWrite) {
			s.tempFailed()
			return nil, &pop3server.Error{Code: "SYS/TEMP", Message: tempfailText, Err: err, Disconnect: true}, true
		}
		return nil, relayError(err), true
	}
	fm := filter.NewMessageAt(buf, n, s.meta(msg))
	if hh, err := headerHash(fm); err != nil || hh != e.HeaderHash {
		// Not the header the decision was made for.
		buf.Close()
		return nil, nil, false
	}
	hold.Close()
	s.log.Debug("TOP answered from the verdict cache", zap.Int("msg", msg), zap.Int("lines", lines))
	res := ch.Replay(ctx, fm, &e.Decision)
	msgOut, err := s.result(msg, res, buf, lines)
	return msgOut, err, true
}

func (s *session) meta(msg int) filter.Meta {
	return filter.Meta{Conn: s.conn, User: s.user, Upstream: s.client.Addr(), Number: msg, UID: s.uid(msg)}
}

// scheduleAhead queues downloads of the next ScanAhead messages after msg
// in the client's direction (down after a RETR of a lower number, as
// clients that fetch newest first do), at most ScanAhead under way at
// once, skipping deleted, oversize, cached and fetched ones. The upstream
// is held, so the first download starts before the client's next command.
func (s *session) scheduleAhead(msg int) {
	n := s.g.opts.ScanAhead
	if n <= 0 || s.g.opts.Chain.Len() == 0 || s.ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.noAhead || s.info == nil {
		return
	}
	if s.lastMsg != 0 && msg != s.lastMsg {
		s.dir = 1
		if msg < s.lastMsg {
			s.dir = -1
		}
	}
	s.lastMsg = msg
	if s.dir == 0 {
		s.dir = 1
	}
	for i := 1; i <= n && s.aheadRunning < n; i++ {
		c := msg + i*s.dir
		mi := s.find(c)
		switch {
		case c < 1:
			return
		case mi == nil, mi.size < 0, mi.size > s.g.opts.MaxSize, s.deleted[c], s.ahead[c] != nil,
			mi.cached && mi.origSize == mi.size:
			continue
		}
		p := &prefetch{msg: c, ticket: s.up.enqueue(), done: make(chan struct{}), counted: true}
		if s.ahead == nil {
			s.ahead = map[int]*prefetch{}
		}
		s.ahead[c] = p
		s.aheadRunning++
		size := mi.size
		s.wg.Go(func() { s.runAhead(p, size) })
	}
}

// runAhead downloads with TOP n 99999999, never RETR, which marks a
// message seen (a mailbox shared with IMAP) and counts it as retrieved for
// EXPIRE 0 (docs/clients.md, Upstream servers). The message is held only
// if it fits in the spool's memory, and scanned with the connection free
// again; the decision goes to the cache and the client's RETR, the bytes
// are dropped.
func (s *session) runAhead(p *prefetch, listed int64) {
	defer func() {
		s.mu.Lock()
		if p.counted {
			p.counted = false
			s.aheadRunning--
		}
		s.mu.Unlock()
		close(p.done)
	}()
	if s.up.wait(s.ctx, p.ticket) != nil {
		return
	}
	hold := &upHold{l: &s.up}
	defer hold.Close()
	s.mu.Lock()
	skip := p.skip
	s.mu.Unlock()
	if skip || s.ctx.Err() != nil {
		return
	}
	buf, ok := s.g.spool.TryBuffer(listed)
	if !ok {
		return // no room in memory: the client's RETR will spool it
	}
	defer buf.Close()
	m, err := s.client.Top(p.msg, wholeMessage)
	if err != nil {
		var se *upstream.ServerError
		if errors.As(err, &se) {
			s.noteNoAhead("upstream refused TOP", err)
		}
		return // a broken connection fails the client's next command
	}
	max := s.g.opts.MaxSize
	h := sha256.New()
	start := time.Now()
	n, err := buf.ReadFrom(io.TeeReader(io.LimitReader(m, max+1), h))
	if errors.Is(err, spool.ErrNoRoom) || (err == nil && n > max) {
		// Larger than LIST said (the reservation covered that): read the rest
		// to stay in step, and stop trusting this upstream's sizes for scan-ahead.
		_, err = io.Copy(io.Discard, m)
		if err == nil {
			err = spool.ErrNoRoom
		}
		s.noteNoAhead("message larger than LIST said", nil)
	}
	m.Close()
	if err != nil || n > max {
		return
	}
	if o := s.g.opts.Observer; o != nil {
		o.Downloaded(time.Since(start))
	}
	digest := digestOf(h)
	s.mu.Lock()
	p.hasDigest, p.digest = true, digest
	skip = p.skip
	s.mu.Unlock()
	hold.Close()
	if skip {
		return
	}
	s.g.stats.Prefetched.Add(1)
	if o, ok := s.g.opts.Observer.(SpeedObserver); ok {
		o.ScannedAhead()
	}
	meta := s.meta(p.msg)
	res := s.decideCached(s.ctx, filter.NewMessageAt(buf, n, meta), digest)
	s.mu.Lock()
	p.dec = res.Decision
	s.mu.Unlock()
	res.Close()
}

// noteNoAhead stops scan-ahead for the rest of the session.
func (s *session) noteNoAhead(why string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.noAhead {
		s.noAhead = true
		s.log.Info("scan-ahead off for this session", zap.String("reason", why), zap.Error(err))
	}
}
