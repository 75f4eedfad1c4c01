package scannertest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

const (
	// rspamdStartTimeout is far above the 7 to 13 s rspamd 3.4 takes to
	// answer /ping without rspamdCache (docs/scanners.md, A rspamd for
	// tests); three starting next to other tests on two cores took 24 s.
	rspamdStartTimeout = 60 * time.Second
	rspamdStopTimeout  = 10 * time.Second

	// rspamdUser is the account Debian's package creates; rspamd run as
	// root refuses to start without -u and -g.
	rspamdUser = "_rspamd"
)

// RspamdOptions configures StartRspamdWith.
type RspamdOptions struct {
	// Password, if set ([A-Za-z0-9._-]), is required from every controller
	// client; without it, Debian's settings let loopback clients in.
	Password string
	// MilterHeaders is milter_headers' "use" list ("x-spamd-result", ...);
	// default none, as in Debian's configuration.
	MilterHeaders []string
}

// Rspamd is an rspamd started by StartRspamd, gone when the test ends.
type Rspamd struct {
	Addr           string // the normal worker, "127.0.0.1:port"
	ControllerAddr string // the controller worker, "127.0.0.1:port"
	// Dir holds conf/local.d (overrides of /etc/rspamd), db, run and log.
	Dir string

	daemon *testinfra.Daemon
	launch testinfra.Launch
	dns    *nxdomainServer
}

// URL returns the normal worker's address as a filter's address key.
func (r *Rspamd) URL() string { return "http://" + r.Addr }

// ControllerURL returns the controller worker's address.
func (r *Rspamd) ControllerURL() string { return "http://" + r.ControllerAddr }

// DNSQueries counts the queries rspamd sent to the test's resolver.
func (r *Rspamd) DNSQueries() int64 { return r.dns.queries.Load() }

// Log returns rspamd's output and log so far, a line per message checked.
func (r *Rspamd) Log() string { return r.launch.Output(0) }

// LogTail returns the last n lines of rspamd's output and log.
func (r *Rspamd) LogTail(n int) string { return r.launch.Output(n) }

// Stop is called when the test ends; calling it earlier, or twice, is fine.
func (r *Rspamd) Stop() error { return r.daemon.Stop(rspamdStopTimeout) }

// StartRspamd runs rspamd with the default RspamdOptions.
func StartRspamd(t testing.TB) *Rspamd {
	t.Helper()
	return StartRspamdWith(t, RspamdOptions{})
}

var (
	rspamdPassword = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	rspamdRoutine  = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
)

// StartRspamdWith waits until rspamd's loopback workers answer /ping
// (docs/scanners.md, A rspamd for tests). Its resolver answers every query
// "no such domain", so that none leaves the machine or waits for a timeout.
func StartRspamdWith(t testing.TB, opt RspamdOptions) *Rspamd {
	t.Helper()
	bin := testinfra.NeedBinary(t, "rspamd")
	if opt.Password != "" && !rspamdPassword.MatchString(opt.Password) {
		t.Fatalf("scannertest: rspamd password %q: use 1 to 64 letters, digits, '.', '_' or '-'", opt.Password)
	}
	for _, r := range opt.MilterHeaders {
		if !rspamdRoutine.MatchString(r) {
			t.Fatalf("scannertest: %q is not a milter_headers routine name", r)
		}
	}

	dns, err := startNXDOMAINServer()
	if err != nil {
		t.Fatalf("scannertest: rspamd's DNS resolver: %v", err)
	}
	t.Cleanup(dns.close)

	dir := testinfra.ShortTempDir(t, "rspamd")
	conf := filepath.Join(dir, "conf")
	localD := filepath.Join(conf, "local.d")
	if err := os.MkdirAll(localD, 0o755); err != nil {
		t.Fatalf("scannertest: %v", err)
	}
	// rspamd's workers write here after dropping privileges.
	var owner *user.User
	if os.Geteuid() == 0 {
		if owner, err = user.Lookup(rspamdUser); err != nil {
			t.Fatalf("scannertest: rspamd runs as %s when started as root, but: %v (the Debian package creates it)", rspamdUser, err)
		}
	}
	for _, sub := range []string{"db", "run", "log"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatalf("scannertest: %v", err)
		}
		if owner != nil {
			uid, _ := strconv.Atoi(owner.Uid)
			gid, _ := strconv.Atoi(owner.Gid)
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatalf("scannertest: %v", err)
			}
		}
	}

	// Saved after the daemon has stopped, before the directory goes.
	db := filepath.Join(dir, "db")
	cache := openRspamdCache(bin)
	if err := cache.seed(db); err != nil {
		t.Logf("scannertest: rspamd starts without its cache: %v", err)
	}
	t.Cleanup(func() { cache.save(db) })

	r := &Rspamd{Dir: dir, dns: dns}
	r.launch = testinfra.Launch{
		Name:    "rspamd",
		Ports:   2,
		OutPath: filepath.Join(dir, "rspamd.out"),
		LogPath: filepath.Join(dir, "log", "rspamd.log"),
		Prepare: func(ports []int) (*exec.Cmd, error) {
			r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
			r.ControllerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
			if err := writeRspamdConfig(localD, r.Addr, r.ControllerAddr, dns.addr, opt); err != nil {
				return nil, err
			}
			args := []string{"-f", "-c", "/etc/rspamd/rspamd.conf"}
			if owner != nil {
				args = append(args, "-u", rspamdUser, "-g", rspamdUser)
			}
			args = append(args,
				"--var=LOCAL_CONFDIR="+conf,
				"--var=DBDIR="+db,
				"--var=RUNDIR="+filepath.Join(dir, "run"),
				"--var=LOGDIR="+filepath.Join(dir, "log"),
			)
			cmd := exec.Command(bin, args...)
			cmd.Dir = dir
			return cmd, nil
		},
		Ready: func([]int) error {
			if err := PingRspamd(r.URL(), time.Second); err != nil {
				return err
			}
			return PingRspamd(r.ControllerURL(), time.Second)
		},
		StartTimeout: rspamdStartTimeout,
		StopTimeout:  rspamdStopTimeout,
	}
	r.daemon, _ = r.launch.Start(t)
	// The TLD database, most of the start-up, is complete by now; the
	// hs_helper's later ones are saved when the test ends.
	cache.save(db)
	return r
}

// rspamdCache: compiling hyperscan databases (the TLD list above all, 43 of
// their 48 MB) is most of rspamd's start-up, 7 to 25 s, against 1.5 s with
// them (docs/scanners.md, A rspamd for tests). rspamd recompiles a file it
// cannot use, so the cache can only save time.
type rspamdCache struct{ dir string }

func openRspamdCache(bin string) rspamdCache {
	base, err := os.UserCacheDir()
	if err != nil {
		return rspamdCache{}
	}
	out, err := exec.Command(bin, "--version").Output()
	st, serr := os.Stat(bin)
	if err != nil || serr != nil {
		return rspamdCache{}
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d", out, st.Size(), st.ModTime().UnixNano()))
	dir := filepath.Join(base, "pop3proxy-test", "rspamd-hs-"+hex.EncodeToString(key[:8]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return rspamdCache{}
	}
	// rspamd loads these files as root; a directory others can write to
	// would let them hand it a database of their making.
	for d := dir; d != base; d = filepath.Dir(d) {
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
			return rspamdCache{}
		}
	}
	return rspamdCache{dir: dir}
}

// rspamdCached: regular expressions (.hs, .hs.unser), multipatterns
// (.hsmp) and regexp maps (.hsmc).
func rspamdCached(name string) bool {
	for _, suffix := range []string{".hs", ".hs.unser", ".hsmp", ".hsmc"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

func (c rspamdCache) seed(db string) error {
	if c.dir == "" {
		return nil
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type().IsRegular() && rspamdCached(e.Name()) {
			if err := copyFile(filepath.Join(c.dir, e.Name()), filepath.Join(db, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// save: files get their final names only once complete, so concurrent
// tests at worst copy the same file twice.
func (c rspamdCache) save(db string) {
	if c.dir == "" {
		return
	}
	entries, err := os.ReadDir(db)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !rspamdCached(name) {
			continue
		}
		if _, err := os.Stat(filepath.Join(c.dir, name)); err == nil {
			continue
		}
		tmp, err := os.CreateTemp(c.dir, ".new-*")
		if err != nil {
			return
		}
		tmp.Close()
		if copyFile(filepath.Join(db, name), tmp.Name()) != nil || os.Rename(tmp.Name(), filepath.Join(c.dir, name)) != nil {
			os.Remove(tmp.Name())
		}
	}
}

// copyFile copies src to dst, readable by rspamd's workers.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, 0o644)
}

// writeRspamdConfig: local.d files have priority 1, so their keys replace
// those of /etc/rspamd (priority 0), bind_socket included.
func writeRspamdConfig(localD, normal, controller, dns string, opt RspamdOptions) error {
	files := map[string]string{
		// One asynchronous process serves the tests' concurrent requests.
		"worker-normal.inc": fmt.Sprintf("bind_socket = %q;\ncount = 1;\n", normal),
		// Disabled: Debian binds them to localhost:11332 and :11335, and
		// the proxy forwards to localhost:11333, a system rspamd's port.
		"worker-proxy.inc": "count = -1;\n",
		"worker-fuzzy.inc": "count = -1;\n",
		"options.inc":      fmt.Sprintf("dns {\n  nameserver = [%q];\n}\n", dns),
		// Its servers are resolved at start by the system resolver, not rspamd's.
		"fuzzy_check.conf": "enabled = false;\n",
	}
	ctl := fmt.Sprintf("bind_socket = %q;\n", controller)
	if opt.Password != "" {
		// TEST-NET-1 replaces Debian's loopback secure_ip, which would
		// let the tests in without the password.
		ctl += fmt.Sprintf("password = %q;\nsecure_ip = \"192.0.2.1\";\n", opt.Password)
	}
	files["worker-controller.inc"] = ctl
	if len(opt.MilterHeaders) > 0 {
		quoted := make([]string, len(opt.MilterHeaders))
		for i, r := range opt.MilterHeaders {
			quoted[i] = strconv.Quote(r)
		}
		files["milter_headers.conf"] = "use = [" + strings.Join(quoted, ", ") + "];\n"
	}
	for name, body := range files {
		body = "# Written by scannertest.StartRspamd.\n" + body
		if err := os.WriteFile(filepath.Join(localD, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// PingRspamd expects "pong" to GET /ping at baseURL within timeout.
func PingRspamd(baseURL string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get(baseURL + "/ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "pong" {
		return fmt.Errorf("GET /ping answered %s %q", resp.Status, body)
	}
	return nil
}

// nxdomainServer answers every query on a loopback UDP port with NXDOMAIN.
type nxdomainServer struct {
	conn    net.PacketConn
	addr    string
	queries atomic.Int64
	wg      sync.WaitGroup
}

func startNXDOMAINServer() (*nxdomainServer, error) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &nxdomainServer{conn: conn, addr: conn.LocalAddr().String()}
	s.wg.Go(s.serve)
	return s, nil
}

func (s *nxdomainServer) close() {
	s.conn.Close()
	s.wg.Wait()
}

func (s *nxdomainServer) serve() {
	buf := make([]byte, 4096)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		reply, ok := nxdomainReply(buf[:n])
		if !ok {
			continue
		}
		s.queries.Add(1)
		s.conn.WriteTo(reply, from)
	}
}

// nxdomainReply answers a standard query for one name (RFC 1035 §4.1)
// with its question and RCODE 3, name error. Anything else gets no
// answer, which a resolver takes for a timeout.
func nxdomainReply(q []byte) ([]byte, bool) {
	const headerLen = 12
	if len(q) < headerLen {
		return nil, false
	}
	flags := binary.BigEndian.Uint16(q[2:4])
	if flags&0x8000 != 0 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil, false // a response, or not exactly one question
	}
	// QNAME is labels up to a zero byte; queries carry no compression.
	end := headerLen
	for end < len(q) && q[end] != 0 {
		end += 1 + int(q[end])
	}
	end += 1 + 4 // the zero byte, QTYPE and QCLASS
	if end > len(q) {
		return nil, false
	}
	reply := make([]byte, end)
	copy(reply, q[:end])
	// QR, the query's opcode and RD, RA, RCODE 3; no answer, authority
	// or additional records (the query's EDNS record is not echoed).
	binary.BigEndian.PutUint16(reply[2:4], 0x8000|flags&0x7800|flags&0x0100|0x0080|3)
	binary.BigEndian.PutUint16(reply[6:8], 0)
	binary.BigEndian.PutUint16(reply[8:10], 0)
	binary.BigEndian.PutUint16(reply[10:12], 0)
	return reply, true
}
