package upstreamtest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

// Dovecot serves its greeting about 50 ms after start on an idle machine;
// startTimeout is generous because CI runs many test binaries on two cores.
const (
	startTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
	logWait      = 10 * time.Second
)

// DovecotOptions configures StartDovecot.
type DovecotOptions struct {
	// Users maps user names to passwords. Default {"alice": "alice-secret"}.
	Users map[string]string
	// TLS adds implicit TLS on TLSAddr and STLS on Addr, with a certificate
	// for 127.0.0.1, ::1 and "localhost" from a throwaway CA (CAFile, TLSConfig).
	TLS bool
	// LockSession sets pop3_lock_session = yes: a second session's PASS gets
	// "-ERR [IN-USE] Mailbox is locked by another POP3 session." after about
	// 10 s (a fixed timeout; mail_max_lock_timeout does not shorten it).
	LockSession bool
	// MaxUserIPConnections raises mail_max_userip_connections (default 10).
	MaxUserIPConnections int
	// OAuth2, if set, also accepts OAuth 2.0 bearer tokens (see OAuth2Options).
	OAuth2 *OAuth2Options
	// UIDLFormat is pop3_uidl_format (default "%08Xu%08Xv"). "%u" gives the
	// UIDLs of servers numbering messages from 1, which a new server with the
	// same mail reuses for other messages.
	UIDLFormat string
}

// Dovecot is a running Dovecot POP3 server, stopped when its test ends.
type Dovecot struct {
	Addr    string // "127.0.0.1:port" of plain POP3, with STLS under TLS
	TLSAddr string // "127.0.0.1:port" of implicit TLS; "" without TLS
	CAFile  string // PEM file of the CA that signed the certificate; "" without TLS
	// Dir holds the config, passwd-file, dovecot.log and mail/<user>/Maildir.
	Dir string

	users   map[string]string
	uid     int
	gid     int
	chown   bool // running as root: files must belong to the mail user
	logPath string
	outPath string
	caPool  *x509.CertPool
	daemon  *testinfra.Daemon
}

// identity is who the mail processes run as, with the settings for non-root.
type identity struct {
	uid, gid int
	chown    bool
	settings string
}

// mailIdentity picks the Maildirs' owner: "mail" as root (Dovecot refuses uid
// 0 for mail processes), else the current user, standing in for dovecot and dovenull.
func mailIdentity() (identity, error) {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("mail")
		if err != nil {
			return identity{}, fmt.Errorf("look up the mail user: %w", err)
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err := errors.Join(err1, err2); err != nil || uid == 0 {
			return identity{}, fmt.Errorf("mail user has unusable ids %s:%s", u.Uid, u.Gid)
		}
		return identity{uid: uid, gid: gid, chown: true}, nil
	}
	uid, gid := os.Getuid(), os.Getgid()
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return identity{}, fmt.Errorf("look up the current user: %w", err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		return identity{}, fmt.Errorf("look up the current group: %w", err)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "default_internal_user = %s\n", u.Username)
	fmt.Fprintf(&s, "default_internal_group = %s\n", g.Name)
	fmt.Fprintf(&s, "default_login_user = %s\n", u.Username)
	// chroot needs root; these are the services that chroot by default.
	for _, svc := range []string{"pop3-login", "anvil", "imap-login", "submission-login", "managesieve-login"} {
		fmt.Fprintf(&s, "service %s {\n  chroot =\n}\n", svc)
	}
	return identity{uid: uid, gid: gid, settings: s.String()}, nil
}

// StartDovecot starts Dovecot (see the package doc), waits for its greeting,
// and at the test's end logs its log's tail if the test failed, then stops it.
func StartDovecot(t testing.TB, opt DovecotOptions) *Dovecot {
	t.Helper()
	bin := testinfra.NeedBinary(t, "dovecot")

	users := opt.Users
	if len(users) == 0 {
		users = map[string]string{"alice": "alice-secret"}
	}
	for name, pass := range users {
		// The passwd-file is ':'-separated and the name becomes a path.
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, ":/ \t\r\n\x00") {
			t.Fatalf("upstreamtest: unusable user name %q", name)
		}
		if strings.ContainsAny(pass, ":\r\n\x00") {
			t.Fatalf("upstreamtest: password of %q contains ':', CR, LF or NUL, which a passwd-file cannot hold", name)
		}
	}

	id, err := mailIdentity()
	if err != nil {
		t.Fatalf("upstreamtest: %v", err)
	}

	dir := t.TempDir()
	if strings.ContainsAny(dir, " \t\"'\\#") {
		t.Fatalf("upstreamtest: temp dir %q has characters Dovecot's configuration cannot take; set TMPDIR", dir)
	}
	if id.chown {
		// t.TempDir's dirs are 0700 and root's: let mail processes reach the Maildirs.
		for _, p := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(p, 0o711); err != nil {
				t.Fatalf("upstreamtest: %v", err)
			}
		}
	}
	d := &Dovecot{
		Dir:     dir,
		users:   users,
		uid:     id.uid,
		gid:     id.gid,
		chown:   id.chown,
		logPath: filepath.Join(dir, "dovecot.log"),
		outPath: filepath.Join(dir, "dovecot.out"),
	}

	var passwd strings.Builder
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		home := filepath.Join(dir, "mail", name)
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(home, "Maildir", sub), 0o700); err != nil {
				t.Fatalf("upstreamtest: %v", err)
			}
		}
		if id.chown {
			for _, p := range []string{home, filepath.Join(home, "Maildir"), filepath.Join(home, "Maildir", "cur"),
				filepath.Join(home, "Maildir", "new"), filepath.Join(home, "Maildir", "tmp")} {
				if err := os.Chown(p, id.uid, id.gid); err != nil {
					t.Fatalf("upstreamtest: %v", err)
				}
			}
			if err := os.Chmod(filepath.Join(dir, "mail"), 0o711); err != nil {
				t.Fatalf("upstreamtest: %v", err)
			}
		}
		// name:password:uid:gid:gecos:home:shell:extra
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s:%d:%d::%s::\n", name, users[name], id.uid, id.gid, home)
	}
	// 0644: the dovecot user's auth process reads it; the passwords are throwaway.
	passwdPath := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwdPath, []byte(passwd.String()), 0o644); err != nil {
		t.Fatalf("upstreamtest: %v", err)
	}

	var pki testinfra.PKI
	if opt.TLS {
		if pki, err = testinfra.WritePKI(dir, "localhost"); err != nil {
			t.Fatalf("upstreamtest: generate TLS certificates: %v", err)
		}
		d.CAFile = pki.CA
		pem, err := os.ReadFile(pki.CA)
		if err != nil {
			t.Fatalf("upstreamtest: %v", err)
		}
		d.caPool = x509.NewCertPool()
		d.caPool.AppendCertsFromPEM(pem)
	}

	var oauth2Path string
	if opt.OAuth2 != nil {
		oauth2Path = filepath.Join(dir, "dovecot-oauth2.conf.ext")
		if err := os.WriteFile(oauth2Path, []byte(oauth2Conf(opt.OAuth2)), 0o644); err != nil {
			t.Fatalf("upstreamtest: %v", err)
		}
	}

	baseDir := testinfra.ShortTempDir(t, "dovecot")
	confPath := filepath.Join(dir, "dovecot.conf")
	launch := testinfra.Launch{
		Name:    "dovecot",
		Ports:   2,
		OutPath: d.outPath,
		LogPath: d.logPath,
		Prepare: func(ports []int) (*exec.Cmd, error) {
			tlsPort := 0
			if opt.TLS {
				tlsPort = ports[1]
			}
			conf := dovecotConfig(configParams{
				dir: dir, baseDir: baseDir, passwd: passwdPath, logPath: d.logPath,
				plainPort: ports[0], tlsPort: tlsPort, pki: pki, id: id, lockSession: opt.LockSession,
				maxUserIP: opt.MaxUserIPConnections, oauth2: oauth2Path, uidlFormat: opt.UIDLFormat,
			})
			return exec.Command(bin, "-F", "-c", confPath), os.WriteFile(confPath, []byte(conf), 0o644)
		},
		Ready: func(ports []int) error {
			d.setAddrs(ports, opt.TLS)
			return d.ready()
		},
		StartTimeout: startTimeout,
		StopTimeout:  stopTimeout,
	}
	daemon, ports := launch.Start(t)
	d.daemon = daemon
	d.setAddrs(ports, opt.TLS)
	return d
}

// Stop stops Dovecot before its test ends; its files stay.
func (d *Dovecot) Stop() error { return d.daemon.Stop(stopTimeout) }

func (d *Dovecot) setAddrs(ports []int, tls bool) {
	d.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	d.TLSAddr = ""
	if tls {
		d.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	}
}

// ready checks the plain greeting and, with TLS, a verified handshake.
func (d *Dovecot) ready() error {
	if err := greeting(func() (net.Conn, error) { return net.DialTimeout("tcp", d.Addr, time.Second) }); err != nil {
		return err
	}
	if d.TLSAddr == "" {
		return nil
	}
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: d.TLSConfig()}
	if err := greeting(func() (net.Conn, error) { return dialer.Dial("tcp", d.TLSAddr) }); err != nil {
		return fmt.Errorf("implicit TLS on %s: %w", d.TLSAddr, err)
	}
	return nil
}

func greeting(dial func() (net.Conn, error)) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("unexpected greeting %q", line)
	}
	return nil
}

// TLSConfig returns a new client configuration trusting only this Dovecot's
// CA, ServerName "127.0.0.1" (also valid: "localhost", ::1); nil without TLS.
func (d *Dovecot) TLSConfig() *tls.Config {
	if d.caPool == nil {
		return nil
	}
	return &tls.Config{RootCAs: d.caPool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

type configParams struct {
	dir, baseDir, passwd, logPath string
	plainPort, tlsPort            int
	pki                           testinfra.PKI
	id                            identity
	lockSession                   bool
	maxUserIP                     int
	oauth2                        string // the oauth2 passdb's configuration file, or ""
	uidlFormat                    string
}

// dovecotConfig is complete: with -c Dovecot reads nothing from /etc/dovecot.
func dovecotConfig(p configParams) string {
	var s strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&s, format+"\n", args...) }
	w("# Written by github.com/pop3proxy/pop3proxy/upstream/upstreamtest.")
	w("protocols = pop3")
	w("listen = 127.0.0.1")
	w("base_dir = %s", p.baseDir)
	w("state_dir = %s", filepath.Join(p.dir, "state"))
	w("log_path = %s", p.logPath)
	w("log_timestamp = \"%%Y-%%m-%%d %%H:%%M:%%S \"")
	w("auth_verbose = yes")
	if p.oauth2 != "" {
		w("auth_mechanisms = plain login xoauth2 oauthbearer")
	} else {
		w("auth_mechanisms = plain login")
	}
	// A failed login is answered in 0.5 s, not 2 s; the auth penalty stays.
	w("auth_failure_delay = 0")
	w("disable_plaintext_auth = no")
	// Dovecot's default floor of 500 would reject the mail user (uid 8).
	w("first_valid_uid = %d", p.id.uid)
	w("last_valid_uid = 0")
	w("first_valid_gid = %d", p.id.gid)
	w("mail_location = maildir:%s/mail/%%u/Maildir", p.dir)
	if p.uidlFormat != "" {
		w("pop3_uidl_format = %s", p.uidlFormat)
	} else {
		w("pop3_uidl_format = %%08Xu%%08Xv")
	}
	if p.lockSession {
		w("pop3_lock_session = yes")
	}
	if p.maxUserIP > 0 {
		w("protocol pop3 {\n  mail_max_userip_connections = %d\n}", p.maxUserIP)
	}
	// fsync only slows tests down.
	w("mail_fsync = never")
	if p.tlsPort != 0 {
		w("ssl = yes")
		w("ssl_cert = <%s", p.pki.Cert)
		w("ssl_key = <%s", p.pki.Key)
		w("ssl_min_protocol = TLSv1.2")
	} else {
		w("ssl = no")
	}
	if p.oauth2 != "" {
		// Separate passdbs: a token is never taken for a password, nor the reverse.
		w("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN %s\n  mechanisms = plain login\n}", p.passwd)
		w("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = %s\n}", p.oauth2)
	} else {
		w("passdb {\n  driver = passwd-file\n  args = scheme=PLAIN %s\n}", p.passwd)
	}
	w("userdb {\n  driver = passwd-file\n  args = %s\n}", p.passwd)
	w("service pop3-login {")
	w("  inet_listener pop3 {\n    port = %d\n  }", p.plainPort)
	if p.tlsPort != 0 {
		w("  inet_listener pop3s {\n    port = %d\n    ssl = yes\n  }", p.tlsPort)
	} else {
		w("  inet_listener pop3s {\n    port = 0\n  }")
	}
	w("}")
	s.WriteString(p.id.settings)
	return s.String()
}

// readLogs returns stdout/stderr (early fatal config errors) and the log file.
func (d *Dovecot) readLogs() []byte {
	out, _ := os.ReadFile(d.outPath)
	log, _ := os.ReadFile(d.logPath)
	return append(out, log...)
}

// Log returns Dovecot's output and log so far.
func (d *Dovecot) Log(t testing.TB) string {
	t.Helper()
	return string(d.readLogs())
}

func (d *Dovecot) logTail(t testing.TB) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(string(d.readLogs()), "\n"), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	t.Logf("upstreamtest: tail of dovecot's log (%s):\n%s", d.logPath, strings.Join(lines, "\n"))
}

// WaitLog fails the test unless substr appears in Dovecot's log within 10 s.
// Dovecot handles a closed connection asynchronously: to check what a dropped
// session left, wait for its mail process's last line, "Disconnected:
// Connection closed top=0/0, retr=0/0, del=0/3, size=..." (del=: expunged, 0
// without QUIT), not a login process's "... (no auth attempts" (StartDovecot's probe).
func (d *Dovecot) WaitLog(t testing.TB, substr string) {
	t.Helper()
	deadline := time.Now().Add(logWait)
	for {
		if log, _ := os.ReadFile(d.logPath); bytes.Contains(log, []byte(substr)) {
			return
		}
		if time.Now().After(deadline) {
			d.logTail(t)
			t.Fatalf("upstreamtest: %q did not appear in dovecot's log within %v", substr, logWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *Dovecot) maildir(t testing.TB, user string) string {
	t.Helper()
	if _, ok := d.users[user]; !ok {
		t.Fatalf("upstreamtest: no such dovecot user %q", user)
	}
	return filepath.Join(d.Dir, "mail", user, "Maildir")
}

var (
	nameMu    sync.Mutex
	lastMicro int64
	nameSeq   uint64
)

// uniqueName returns a Maildir file name "<sec>.M<usec>P<pid>Q<seq>.<host>"
// as Dovecot writes them. The time part strictly increases in the process, so
// names sort, as numbers and strings, in delivery order: Dovecot's numbering.
func uniqueName() string {
	nameMu.Lock()
	now := time.Now().UnixMicro()
	if now <= lastMicro {
		now = lastMicro + 1
	}
	lastMicro = now
	nameSeq++
	seq := nameSeq
	nameMu.Unlock()
	return fmt.Sprintf("%d.M%06dP%dQ%d.upstreamtest", now/1e6, now%1e6, os.Getpid(), seq)
}

// Deliver stores msg, exactly as given, in the user's Maildir: written to
// tmp/ and renamed into new/, so Dovecot never sees a partial file.
func (d *Dovecot) Deliver(t testing.TB, user string, msg []byte) {
	t.Helper()
	md := d.maildir(t, user)
	name := uniqueName()
	tmp := filepath.Join(md, "tmp", name)
	if err := os.WriteFile(tmp, msg, 0o600); err != nil {
		t.Fatalf("upstreamtest: deliver: %v", err)
	}
	if d.chown {
		if err := os.Chown(tmp, d.uid, d.gid); err != nil {
			t.Fatalf("upstreamtest: deliver: %v", err)
		}
	}
	if err := os.Rename(tmp, filepath.Join(md, "new", name)); err != nil {
		t.Fatalf("upstreamtest: deliver: %v", err)
	}
}

// maildirKey orders Maildir names by delivery: seconds, "M<usec>", name.
type maildirKey struct {
	sec, usec int64
	name      string
}

func parseMaildirName(base string) maildirKey {
	k := maildirKey{name: base}
	first, rest, _ := strings.Cut(base, ".")
	k.sec, _ = strconv.ParseInt(first, 10, 64)
	mid, _, _ := strings.Cut(rest, ".")
	if i := strings.IndexByte(mid, 'M'); i >= 0 {
		j := i + 1
		for j < len(mid) && mid[j] >= '0' && mid[j] <= '9' {
			j++
		}
		k.usec, _ = strconv.ParseInt(mid[i+1:j], 10, 64)
	}
	return k
}

// Messages returns the user's messages (new/, cur/) by delivery, as stored.
func (d *Dovecot) Messages(t testing.TB, user string) [][]byte {
	t.Helper()
	md := d.maildir(t, user)
	// Dovecot moves files from new/ to cur/ as a session opens the maildrop;
	// a file gone between listing and reading is looked for again.
	for range 20 {
		msgs, err := readMaildir(md)
		if err == nil {
			return msgs
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("upstreamtest: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("upstreamtest: %s keeps changing while being read", md)
	return nil
}

func readMaildir(md string) ([][]byte, error) {
	type file struct {
		key  maildirKey
		path string
	}
	var files []file
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			base, _, _ := strings.Cut(e.Name(), ":")
			files = append(files, file{parseMaildirName(base), filepath.Join(md, sub, e.Name())})
		}
	}
	sort.Slice(files, func(i, j int) bool {
		a, b := files[i].key, files[j].key
		if a.sec != b.sec {
			return a.sec < b.sec
		}
		if a.usec != b.usec {
			return a.usec < b.usec
		}
		return a.name < b.name
	})
	msgs := make([][]byte, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, data)
	}
	return msgs, nil
}

// Count returns the number of messages in the user's Maildir.
func (d *Dovecot) Count(t testing.TB, user string) int {
	t.Helper()
	return len(d.Messages(t, user))
}
