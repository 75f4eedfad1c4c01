package scannertest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rspamdHam is ordinary mail whose topmost Received field names the
// sending host, as a receiving MTA writes it (docs/scanners.md, rspamd
// without an envelope).
func rspamdHam(body string) []byte {
	return []byte("Received: from mail.example.com (mail.example.com [192.0.2.10])\r\n" +
		"\tby mx.example.net with ESMTPS id 4Xyz; Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <20261122100000.12345@mail.example.com>\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"From: Alice Example <alice@example.com>\r\n" +
		"To: Bob Example <bob@example.net>\r\n" +
		"Subject: meeting notes\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n" + body)
}

type rspamdReply struct {
	Action string                     `json:"action"`
	Score  float64                    `json:"score"`
	Milter map[string]json.RawMessage `json:"milter"`
	Error  string                     `json:"error"`
}

// rspamdCheck posts msg to baseURL's /checkv2 with the given request
// headers and returns the HTTP status and the decoded reply.
func rspamdCheck(t *testing.T, baseURL string, msg []byte, header map[string]string) (int, rspamdReply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, baseURL+"/checkv2", bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST /checkv2: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	var r rspamdReply
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("reply %s %q: %v", resp.Status, body, err)
	}
	return resp.StatusCode, r
}

// listening reports whether something accepts TCP connections on addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// debianRspamdPorts are the ports Debian's rspamd.conf binds on localhost:
// proxy, normal, controller, fuzzy.
var debianRspamdPorts = []string{"11332", "11333", "11334", "11335"}

// TestStartRspamd starts a real rspamd with Debian's defaults and checks
// that it judges GTUBE and ordinary mail, binds only the ports it was
// given, resolves names through the test's resolver, and that Stop leaves
// no process behind.
//
// Not parallel to TestStartRspamdWithOptions: the second rspamd then
// starts from the databases the first compiled (rspamdCache).
func TestStartRspamd(t *testing.T) {
	var busy []string
	for _, p := range debianRspamdPorts {
		for _, host := range []string{"127.0.0.1", "::1"} {
			if addr := net.JoinHostPort(host, p); listening(addr) {
				busy = append(busy, addr)
			}
		}
	}

	start := time.Now()
	r := StartRspamd(t)
	t.Logf("rspamd answered /ping on %s and %s after %v", r.Addr, r.ControllerAddr, time.Since(start).Round(time.Millisecond))

	for _, a := range []string{r.Addr, r.ControllerAddr} {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("address %q, want loopback", a)
		}
	}
	if r.Addr == r.ControllerAddr {
		t.Errorf("normal and controller workers share %s", r.Addr)
	}
	if r.URL() != "http://"+r.Addr || r.ControllerURL() != "http://"+r.ControllerAddr {
		t.Errorf("URLs %q %q", r.URL(), r.ControllerURL())
	}
	for _, p := range debianRspamdPorts {
		for _, host := range []string{"127.0.0.1", "::1"} {
			addr := net.JoinHostPort(host, p)
			if listening(addr) && !strings.Contains(strings.Join(busy, " "), addr) {
				t.Errorf("%s is bound since rspamd started: the local.d overrides did not apply", addr)
			}
		}
	}

	// rspamd 3.4 decides GTUBE before any rule runs (docs/scanners.md,
	// rspamd replies).
	status, rep := rspamdCheck(t, r.URL(), rspamdHam("Hi Bob,\r\n\r\n"+string(GTUBE())+"\r\n"), nil)
	if status != http.StatusOK || rep.Action != "reject" {
		t.Errorf("GTUBE: %d, action %q score %v", status, rep.Action, rep.Score)
	}
	before := r.DNSQueries()
	status, rep = rspamdCheck(t, r.URL(), rspamdHam("Hi Bob,\r\n\r\nthe minutes are below.\r\n\r\nAlice\r\n"), nil)
	if status != http.StatusOK || rep.Action != "no action" {
		t.Errorf("ham: %d, action %q score %v", status, rep.Action, rep.Score)
	}
	// The Received field's address and the domains are looked up (RBLs,
	// SPF, DMARC): through the test's resolver, none elsewhere.
	if r.DNSQueries() == before {
		t.Errorf("checking a message sent no DNS query to the test's resolver")
	}
	// Debian's controller lets loopback clients in without a password.
	if status, rep := rspamdCheck(t, r.ControllerURL(), rspamdHam("hello\r\n"), nil); status != http.StatusOK || rep.Action == "" {
		t.Errorf("controller /checkv2: %d %+v", status, rep)
	}
	if !strings.Contains(r.Log(), "rspamd_task_write_log") {
		t.Errorf("rspamd's log shows no checked message:\n%s", r.LogTail(20))
	}

	pgid := r.daemon.Pid()
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for liveProcessesInGroup(t, pgid) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes of rspamd's group %d still running after Stop", pgid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := PingRspamd(r.URL(), time.Second); err == nil {
		t.Fatal("rspamd still answers /ping after Stop")
	}
}

// TestStartRspamdWithOptions: the controller then wants the password from
// loopback clients too, and rspamd returns the chosen milter_headers
// routines' fields.
func TestStartRspamdWithOptions(t *testing.T) {
	r := StartRspamdWith(t, RspamdOptions{Password: "t0p-secret", MilterHeaders: []string{"x-spamd-bar", "x-rspamd-server"}})
	msg := rspamdHam("Hi Bob,\r\n\r\nthe minutes are below.\r\n\r\nAlice\r\n")
	for _, tc := range []struct {
		password string
		want     int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {"t0p-secret", http.StatusOK}} {
		h := map[string]string{}
		if tc.password != "" {
			h["Password"] = tc.password
		}
		if status, rep := rspamdCheck(t, r.ControllerURL(), msg, h); status != tc.want {
			t.Errorf("controller with password %q: %d %+v, want %d", tc.password, status, rep, tc.want)
		}
	}
	// /ping needs no password, on either worker.
	if err := PingRspamd(r.ControllerURL(), 5*time.Second); err != nil {
		t.Errorf("controller /ping: %v", err)
	}
	_, rep := rspamdCheck(t, r.URL(), msg, nil)
	var add map[string]json.RawMessage
	if err := json.Unmarshal(rep.Milter["add_headers"], &add); err != nil {
		t.Fatalf("milter %s: %v", rep.Milter["add_headers"], err)
	}
	for _, name := range []string{"X-Spamd-Bar", "X-Rspamd-Server"} {
		if _, ok := add[name]; !ok {
			t.Errorf("milter.add_headers lacks %s: %s", name, rep.Milter["add_headers"])
		}
	}
}

// TestNXDOMAINReply checks the test resolver's answer byte for byte, and
// that it ignores what is not a one-question query.
func TestNXDOMAINReply(t *testing.T) {
	q := []byte{0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1}
	q = append(q, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1)
	opt := []byte{0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0} // EDNS OPT record
	reply, ok := nxdomainReply(append(append([]byte{}, q...), opt...))
	if !ok {
		t.Fatal("no reply to a query")
	}
	want := append([]byte{}, q...)
	binary.BigEndian.PutUint16(want[2:4], 0x8183) // QR, RD, RA, NXDOMAIN
	binary.BigEndian.PutUint16(want[10:12], 0)
	if !bytes.Equal(reply, want) {
		t.Errorf("reply\n% x\nwant\n% x", reply, want)
	}
	for name, bad := range map[string][]byte{
		"short":     q[:11],
		"response":  append([]byte{0, 1, 0x81, 0x80}, q[4:]...),
		"two qs":    append([]byte{0, 1, 1, 0, 0, 2}, q[6:]...),
		"cut qname": q[:18],
	} {
		if _, ok := nxdomainReply(bad); ok {
			t.Errorf("%s: answered", name)
		}
	}

	s, err := startNXDOMAINServer()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	c, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], want) || s.queries.Load() != 1 {
		t.Errorf("over UDP: % x after %d queries", buf[:n], s.queries.Load())
	}
	if !strings.HasPrefix(s.addr, "127.0.0.1:") {
		t.Errorf("resolver on %s, want loopback", s.addr)
	}
}

// TestRspamdCache: compiled databases go into the cache and back into a
// new DBDIR, other files do not, and a cache directory others may write
// to is not used.
func TestRspamdCache(t *testing.T) {
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true program to stand in for rspamd --version")
	}
	home := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", home)
	c := openRspamdCache(bin)
	if !strings.HasPrefix(c.dir, filepath.Join(home, "pop3proxy-test")+string(filepath.Separator)) {
		t.Fatalf("cache directory %q, want one under %s", c.dir, home)
	}
	if fi, err := os.Stat(c.dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, %v", fi.Mode(), err)
	}

	db := t.TempDir()
	files := map[string]bool{"a.hs": true, "b.hsmp": true, "c.hsmc": true, "d.hs.unser": true,
		"symbols.cache": false, "e.hs.new": false, "rspamd.rrd": false}
	for name := range files {
		if err := os.WriteFile(filepath.Join(db, name), []byte("data of "+name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.save(db)
	fresh := t.TempDir()
	if err := c.seed(fresh); err != nil {
		t.Fatal(err)
	}
	for name, cached := range files {
		b, err := os.ReadFile(filepath.Join(fresh, name))
		switch {
		case cached && string(b) != "data of "+name:
			t.Errorf("%s seeded as %q, %v", name, b, err)
		case !cached && err == nil:
			t.Errorf("%s was cached", name)
		}
		if fi, err := os.Stat(filepath.Join(fresh, name)); cached && (err != nil || fi.Mode().Perm() != 0o644) {
			t.Errorf("%s seeded with mode %v, %v; rspamd's workers must read it", name, fi.Mode(), err)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(c.dir, ".new-*")); len(leftovers) > 0 {
		t.Errorf("temporary files left in the cache: %v", leftovers)
	}

	if err := os.Chmod(filepath.Dir(c.dir), 0o777); err != nil {
		t.Fatal(err)
	}
	if c := openRspamdCache(bin); c.dir != "" {
		t.Errorf("cache %q used under a directory anybody may write to", c.dir)
	}
	if err := (rspamdCache{}).seed(fresh); err != nil {
		t.Errorf("seed without a cache: %v", err)
	}
}
