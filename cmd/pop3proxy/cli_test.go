package main

import (
	"bufio"
	"debug/buildinfo"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// -version prints the version and the VCS revision that `go build`
// recorded: built here with -buildvcs=true (overriding a GOFLAGS
// -buildvcs=false), the revision is the checkout's HEAD.
func TestVersionFlag(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not found: go build records no revision without it")
	}
	head, err := exec.Command(git, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pop3proxy")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -buildvcs=true: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("-version: %v\n%s", err, out)
	}
	line := strings.TrimSpace(string(out))
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^pop3proxy ` + regexp.QuoteMeta(bi.Main.Version) +
		` \(revision ` + strings.TrimSpace(string(head)) + `, \d{4}-\d\d-\d\d(, modified)?\) go\S+$`)
	if !want.MatchString(line) {
		t.Errorf("-version printed %q, want it to match %s", line, want)
	}

	// The binary of the other tests: whatever go build recorded, and
	// "(devel)" when it recorded no version.
	out, err = exec.Command(proxyBin, "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "pop3proxy ") || strings.Count(string(out), "\n") != 1 {
		t.Errorf("-version of the test binary: %v, %q", err, out)
	}
}

// -help explains the program, its flags and where the keys are documented,
// and exits 0.
func TestHelpFlag(t *testing.T) {
	out, err := exec.Command(proxyBin, "-help").CombinedOutput()
	if err != nil {
		t.Fatalf("-help: %v\n%s", err, out)
	}
	for _, want := range []string{"filtering POP3 proxy", "-config FILE", "-check", "-version", "SIGHUP", "config.yaml.example", "README"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-help does not mention %q:\n%s", want, out)
		}
	}
}

// An empty configuration file, or one with only comments, is all
// defaults: -check accepts it and the proxy serves on 127.0.0.1:1110.
func TestEmptyConfig(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.yaml")
	comments := filepath.Join(dir, "comments.yaml")
	os.WriteFile(empty, nil, 0o600)
	os.WriteFile(comments, []byte("# every key is optional\n\n# listen: 127.0.0.1:1110\n"), 0o600)
	for _, path := range []string{empty, comments} {
		out, err := exec.Command(proxyBin, "-check", "-config", path).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "configuration ok" {
			t.Errorf("-check %s: %v\n%s", filepath.Base(path), err, out)
		}
	}

	const defaultAddr = "127.0.0.1:1110"
	if c, err := net.DialTimeout("tcp", defaultAddr, time.Second); err == nil {
		c.Close()
		t.Skipf("%s, the default listener, is in use here", defaultAddr)
	}
	cmd := exec.Command(proxyBin, "-config", empty)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", defaultAddr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line != "+OK pop3proxy ready\r\n" {
				t.Fatalf("greeting %q, want the default one", line)
			}
			return
		}
		select {
		case err := <-done:
			t.Fatalf("pop3proxy with an empty configuration exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pop3proxy with an empty configuration does not serve %s\n%s", defaultAddr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A listen address another program holds stops the proxy with a message
// that names the key and says what is wrong.
func TestListenAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, fmt.Appendf(nil, "listen: %q\n", ln.Addr()), 0o600)
	cmd := exec.Command(proxyBin, "-config", path)
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("pop3proxy still running on an address in use")
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("exit = %v, want a failure; output:\n%s", err, out)
	}
	want := fmt.Sprintf("listen %s: address already in use: another program", ln.Addr())
	if !strings.Contains(string(out), want) {
		t.Errorf("output does not say %q:\n%s", want, out)
	}
}
