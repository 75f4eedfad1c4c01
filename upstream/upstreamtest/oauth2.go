package upstreamtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// OAuth2Options makes StartDovecot also accept SASL XOAUTH2 and OAUTHBEARER
// through Dovecot's oauth2 passdb, which asks IntrospectionURL about each token.
type OAuth2Options struct {
	// IntrospectionURL is where Dovecot POSTs "token=<token>": TokenServer.URL.
	IntrospectionURL string
}

// oauth2Conf is the oauth2 passdb's configuration (Dovecot 2.3, doc.dovecot.org
// "OAuth2"): without tokeninfo_url the introspection answer alone decides. A
// token is valid if "active" is true, and only for the user "username" names,
// so a relay that passed its routed login on unchanged is refused.
func oauth2Conf(o *OAuth2Options) string {
	return fmt.Sprintf("introspection_mode = post\nintrospection_url = %s\n"+
		"username_attribute = username\nactive_attribute = active\nactive_value = true\n"+
		"timeout_msecs = 5000\n", o.IntrospectionURL)
}

// TokenServer is an RFC 7662-style introspection endpoint on loopback: a POST
// with the form field "token" gets {"active":true,"username":"<user>"} for a
// token added with Add, else {"active":false}. It stops when the test ends.
type TokenServer struct {
	// URL is the introspection endpoint, for OAuth2Options.
	URL string

	mu       sync.Mutex
	tokens   map[string]string
	requests int
}

// StartTokenServer starts a TokenServer.
func StartTokenServer(t testing.TB) *TokenServer {
	t.Helper()
	s := &TokenServer{tokens: map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/introspect"
	return s
}

// Add makes token valid for user.
func (s *TokenServer) Add(token, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = user
}

// Requests returns how many introspection requests have come.
func (s *TokenServer) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/introspect" {
		http.Error(w, "POST /introspect only", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	s.mu.Lock()
	s.requests++
	user, ok := s.tokens[token]
	s.mu.Unlock()
	answer := map[string]any{"active": false}
	if ok {
		answer = map[string]any{"active": true, "username": user}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(answer)
}
