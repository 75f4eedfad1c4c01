package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

// buildExample compiles one of the examples/ programs.
func buildExample(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/"+name).CombinedOutput(); err != nil {
		t.Fatalf("building examples/%s: %v\n%s", name, err, out)
	}
	return bin
}

// The README's quick start, step by step, with nothing but Go: the demo
// Maildir server, the proxy with config.yaml.example, and popfetch logging
// in through the proxy. Ports are free ones instead of 2110 and 1110.
func TestQuickStart(t *testing.T) {
	maildirBin, fetchBin := buildExample(t, "maildir"), buildExample(t, "popfetch")

	demoAddr := testinfra.FreeAddr(t)
	demo := exec.Command(maildirBin, "-maildir", filepath.Join(t.TempDir(), "demo-maildir"), "-init", "-listen", demoAddr)
	var demoLog syncBuffer
	demo.Stdout, demo.Stderr = &demoLog, &demoLog
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		demo.Process.Kill()
		demo.Wait()
		if t.Failed() {
			t.Logf("demo server output:\n%s", demoLog.String())
		}
	})
	waitListening(t, demoAddr)

	example, err := os.ReadFile("../../config.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	config := strings.ReplaceAll(string(example), "127.0.0.1:2110", demoAddr)
	config = strings.Replace(config, `listen: "127.0.0.1:1110"`, "", 1)
	p := startProxy(t, config)

	fetch := func(server, user string, args ...string) []byte {
		return runTool(t, 30*time.Second, fetchBin, append([]string{"-server", server, "-user", user, "-password", "demo"}, args...)...)
	}
	listing := fetch(p.Addr, "demo%"+demoAddr)
	if !bytes.HasPrefix(listing, []byte("3 messages")) {
		t.Fatalf("popfetch through the proxy listed:\n%s", listing)
	}
	if direct := fetch(demoAddr, "demo"); !bytes.Equal(listing, direct) {
		t.Errorf("listing through the proxy:\n%s\ndirect:\n%s", listing, direct)
	}
	// The example's chain adds one header field and changes nothing else.
	for _, n := range []string{"1", "2", "3"} {
		via, direct := fetch(p.Addr, "demo%"+demoAddr, "-retr", n), fetch(demoAddr, "demo", "-retr", n)
		if want := append([]byte("X-Scanned-By: pop3proxy\r\n"), direct...); len(direct) == 0 || !bytes.Equal(via, want) {
			t.Errorf("message %s through the proxy:\n%s\ndirect:\n%s", n, via, direct)
		}
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s", addr)
}
