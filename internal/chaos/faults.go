//go:build linux

package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pop3proxy/pop3proxy/internal/faultnet"
)

// injector applies a round's events and undoes each when it ends. A
// component hit by a newer event is left to that event to undo.
type injector struct {
	w       *World
	mu      sync.Mutex
	owner   map[string]int // component → the event that set its fault
	wg      sync.WaitGroup
	errs    []error // what the harness could not do, reported as violations
	applied []string
}

func newInjector(w *World) *injector { return &injector{w: w, owner: map[string]int{}} }

// run applies events at their times until ctx ends, then waits for every
// event to be undone.
func (in *injector) run(ctx context.Context, events []Event) {
	start := time.Now()
	for i, e := range events {
		select {
		case <-ctx.Done():
			in.wg.Wait()
			return
		case <-time.After(time.Until(start.Add(e.At))):
		}
		in.w.Stats.Faults.Add(1)
		in.mu.Lock()
		in.applied = append(in.applied, e.String())
		in.mu.Unlock()
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			if err := in.apply(ctx, i, e); err != nil {
				in.fail(fmt.Errorf("%s: %w", e, err))
			}
		}()
	}
	in.wg.Wait()
}

func (in *injector) fail(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.errs = append(in.errs, err)
}

// claim makes event id the owner of component and reports whether it
// still is when release is called.
func (in *injector) claim(component string, id int) (release func() bool) {
	in.mu.Lock()
	in.owner[component] = id
	in.mu.Unlock()
	return func() bool {
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.owner[component] != id {
			return false
		}
		delete(in.owner, component)
		return true
	}
}

// hold keeps a fault for d, or until the round ends.
func hold(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (in *injector) relayFault(ctx context.Context, id int, name string, r *faultnet.Relay, f faultnet.Fault, n int64, d time.Duration) {
	release := in.claim(name, id)
	r.Set(f, n)
	hold(ctx, d)
	if release() {
		r.Set(faultnet.None, 0)
	}
}

func (in *injector) apply(ctx context.Context, id int, e Event) error {
	w := in.w
	scan := w.scanners[e.Target]
	switch e.Kind {
	case ProxyKill:
		w.proxyMu.Lock()
		defer w.proxyMu.Unlock()
		w.proxy.Kill()
		time.Sleep(e.For / 4)
		w.restartProxy(ctx)
	case ProxyTerm:
		w.proxyMu.Lock()
		defer w.proxyMu.Unlock()
		if err := w.proxy.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		// drain_timeout (5s) plus time to close.
		if !w.proxy.Wait(15 * time.Second) {
			w.proxy.Kill()
			return errors.New("the proxy did not exit within 15s of SIGTERM (drain_timeout is 5s)")
		}
		w.restartProxy(ctx)
	case ProxyReload:
		return w.reload(func(c *proxyConfig) {
			c.UseRspamd = !c.UseRspamd
			c.KeepaliveShort = e.N%2 == 0
			c.ScanAhead = 2 * int(e.N%2)
		})
	case UpRefuse:
		in.relayFault(ctx, id, "upstream", w.upstream, faultnet.Refuse, 0, e.For)
	case UpCut:
		in.relayFault(ctx, id, "upstream", w.upstream, faultnet.Cut, e.N, e.For)
	case UpStall:
		in.relayFault(ctx, id, "upstream", w.upstream, faultnet.Stall, 0, e.For)
	case UpGarbage:
		in.relayFault(ctx, id, "upstream", w.upstream, faultnet.Garbage, 0, e.For)
	case UpEndless:
		in.relayFault(ctx, id, "upstream", w.upstream, faultnet.Endless, e.N, e.For)
	case UpQuitErr:
		in.relayFault(ctx, id, "upstream", w.upstream, faultnet.QuitErr, 0, e.For)
	case UpQuitErrAfter:
		in.relayFault(ctx, id, "upstream", w.upstream, faultnet.QuitErr, 1, e.For)
	case ScanRefuse:
		in.relayFault(ctx, id, scan.name, scan.relay, faultnet.Refuse, 0, e.For)
	case ScanCut:
		in.relayFault(ctx, id, scan.name, scan.relay, faultnet.Cut, e.N, e.For)
	case ScanStall:
		in.relayFault(ctx, id, scan.name, scan.relay, faultnet.Stall, 0, e.For)
	case ScanGarbage:
		in.relayFault(ctx, id, scan.name, scan.relay, faultnet.Garbage, 0, e.For)
	case CacheAway:
		// Hung (each lookup costs cache.timeout) or gone (connections
		// reset at their next answer).
		f := faultnet.Stall
		if e.N == 1 {
			f = faultnet.Cut
		}
		in.relayFault(ctx, id, "cache", w.cache, f, 0, e.For)
	case ScanRestart:
		in.restart(ctx, id, scan, e.For)
	case SpoolGone:
		return in.moveAway(ctx, id, w.config.Spool, e.For)
	case QuarantineGone:
		return in.moveAway(ctx, id, w.config.Quarantine, e.For)
	case SpoolFull:
		return in.fileSizeLimit(ctx, id, e.N, e.For)
	case QuarantineFull:
		if err := w.reload(func(c *proxyConfig) { c.QuarantineFull = true }); err != nil {
			return err
		}
		hold(ctx, e.For)
		return w.reload(func(c *proxyConfig) { c.QuarantineFull = false })
	}
	return nil
}

// restartProxy starts the proxy again, retrying while the round lasts: a
// start fails while another fault has taken its quarantine directory
// away, as it should (a missing spool directory it makes again). If it
// never starts, the check after the round says so.
func (w *World) restartProxy(ctx context.Context) {
	for w.proxy.Start() != nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// reload changes the configuration and sends SIGHUP.
func (w *World) reload(change func(*proxyConfig)) error {
	w.proxyMu.Lock()
	defer w.proxyMu.Unlock()
	change(&w.config)
	if err := w.writeConfig(); err != nil {
		return err
	}
	if !w.proxy.Running() {
		return nil // a restart will read it
	}
	return w.proxy.Signal(syscall.SIGHUP)
}

// restart kills the scanner's current instance, so that scans in
// progress fail mid-way, refuses connections for d as while a daemon
// starts, then sends connections to the standby.
func (in *injector) restart(ctx context.Context, id int, s *scanner, d time.Duration) {
	s.mu.Lock()
	standby := s.standby
	s.standby = nil
	old := s.current
	if standby != nil {
		s.current = *standby
	}
	s.mu.Unlock()
	if standby == nil {
		// Killed once this round already; its replacement starts
		// between rounds.
		in.relayFault(ctx, id, s.name, s.relay, faultnet.Refuse, 0, d)
		return
	}
	release := in.claim(s.name, id)
	old.stop()
	s.relay.Set(faultnet.Refuse, 0)
	hold(ctx, d)
	s.relay.Retarget(standby.addr)
	if release() {
		s.relay.Set(faultnet.None, 0)
	}
}

// moveAway renames dir for d, so that creating files in it fails.
func (in *injector) moveAway(ctx context.Context, id int, dir string, d time.Duration) error {
	release := in.claim(dir, id)
	away := dir + ".away"
	if _, err := os.Stat(away); err != nil {
		if err := os.Rename(dir, away); err != nil {
			release()
			return err
		}
	} // else moved away by an earlier event, which leaves it to this one
	hold(ctx, d)
	if !release() {
		return nil
	}
	if err := os.Rename(away, dir); !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return err
	}
	// The proxy made a new one when it started meanwhile (spool_dir);
	// what the old one holds goes back into it.
	entries, err := os.ReadDir(away)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(away, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(away)
}

// fileSizeLimit sets the proxy's RLIMIT_FSIZE to n bytes for d: writing
// a spool or quarantine file past it fails with EFBIG, as on a full
// disk. (Go ignores the SIGXFSZ that comes with it.)
func (in *injector) fileSizeLimit(ctx context.Context, id int, n int64, d time.Duration) error {
	release := in.claim("fsize", id)
	pid := in.w.proxy.Pid()
	if pid == 0 {
		release()
		return nil
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: uint64(n), Max: unix.RLIM_INFINITY}, nil); err != nil {
		release()
		return fmt.Errorf("prlimit: %w", err)
	}
	hold(ctx, d)
	if !release() {
		return nil
	}
	none := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &none, nil); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("prlimit: %w", err)
	}
	return nil
}
