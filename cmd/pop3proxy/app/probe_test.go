package app

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

// The HEALTHCHECK's verdict: 0 only for a 2xx answer; an error status, a
// redirect, a refused connection, a server that never answers and a URL
// that is not http(s) are all 1, with the reason on stderr.
func TestProbe(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "want GET", http.StatusMethodNotAllowed)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/healthz", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + closed.Addr().String() + "/healthz"
	closed.Close()

	for _, tc := range []struct {
		url      string
		code     int
		inStderr string
	}{
		{srv.URL + "/healthz", 0, ""},
		{srv.URL + "/readyz", 1, "503 Service Unavailable"},
		{srv.URL + "/moved", 1, "302 Found"},
		{srv.URL + "/nosuch", 1, "404"},
		{refused, 1, "refused"},
		{"ftp://127.0.0.1/healthz", 1, "want an http:// or https:// URL"},
		{"127.0.0.1:9110/healthz", 1, ""},
		{"http:///healthz", 1, "with a host"},
	} {
		var stdout, stderr bytes.Buffer
		code := runProbe(tc.url, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.inStderr) {
			t.Errorf("-probe %s: exit %d, stderr %q; want exit %d with %q", tc.url, code, stderr.String(), tc.code, tc.inStderr)
		}
		if code == 0 && !strings.Contains(stdout.String(), "200") {
			t.Errorf("-probe %s: stdout %q, want the status", tc.url, stdout.String())
		}
	}
}

// A health endpoint that accepts and never answers costs the probe its
// timeout, not the container engine's.
func TestProbeTimeout(t *testing.T) {
	addr := testinfra.Silent(t)
	start := time.Now()
	_, err := probe(context.Background(), "http://"+addr+"/healthz", 300*time.Millisecond)
	if err == nil {
		t.Fatal("a silent endpoint passed the probe")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("probe took %v with a 300ms timeout", d)
	}
}
