package pop3server_test

import (
	"reflect"
	"testing"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

func TestCapa(t *testing.T) {
	for _, tc := range []struct {
		name          string
		opts          pop3server.Options
		wrap          func(*fakeSession) pop3server.Session
		before, after []string
	}{
		{
			name:   "defaults",
			before: []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL"},
			after:  []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL"},
		},
		{
			name: "options",
			opts: pop3server.Options{
				Implementation:       "pop3proxy test",
				LoginDelay:           900,
				Expire:               "NEVER",
				PreLoginCapabilities: []string{},
			},
			before: []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "LOGIN-DELAY 900", "EXPIRE NEVER", "IMPLEMENTATION pop3proxy test"},
			after:  []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL", "LOGIN-DELAY 900", "EXPIRE NEVER", "IMPLEMENTATION pop3proxy test"},
		},
		{
			name:   "session without add-ons",
			opts:   pop3server.Options{PreLoginCapabilities: []string{"uidl"}},
			wrap:   func(s *fakeSession) pop3server.Session { return plainSession{s} },
			before: []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "UIDL"},
			after:  []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING"},
		},
		{
			name: "CapabilitySession",
			opts: pop3server.Options{LoginDelay: 900, Expire: "30 USER"},
			wrap: func(s *fakeSession) pop3server.Session {
				return capSession{Session: s, TopSession: s, caps: []string{
					"TOP", "UIDL", "EXPIRE 30", "LOGIN-DELAY 60", "X-BOGUS", "SASL PLAIN", "STLS", "TOP",
					"EXPIRE 7", "LOGIN-DELAY soon", "EXPIRE 5 USER",
				}}
			},
			before: []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL", "LOGIN-DELAY 900", "EXPIRE 30 USER"},
			after:  []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "EXPIRE 30", "LOGIN-DELAY 60"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Backend = &fakeBackend{wrap: tc.wrap}
			ts := startServer(t, tc.opts)
			c := dial(t, ts.addr)
			c.Expect("+OK *")
			if got := c.Capa(); !reflect.DeepEqual(got, tc.before) {
				t.Errorf("CAPA before login = %q, want %q", got, tc.before)
			}
			c.Script(`
				C: USER alice
				S: +OK *
				C: PASS secret
				S: +OK *`)
			if got := c.Capa(); !reflect.DeepEqual(got, tc.after) {
				t.Errorf("CAPA after login = %q, want %q", got, tc.after)
			}
		})
	}
}

// TestMissingAddOns checks that TOP and UIDL are unknown commands on a
// session without the add-on.
func TestMissingAddOns(t *testing.T) {
	be := &fakeBackend{wrap: func(s *fakeSession) pop3server.Session { return plainSession{s} }}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Script(`
		C: TOP 1 0
		S: -ERR unknown command
		C: UIDL
		S: -ERR unknown command
		C: UIDL 1
		S: -ERR unknown command
		C: LIST 1
		S: +OK 1 *`)
}

// TestCapaExpireUser checks that EXPIRE's USER argument, which RFC 2449
// §6.7 allows only before login, is not announced after it by a session
// that cannot name the user's own value.
func TestCapaExpireUser(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, Expire: "30 USER", LoginDelay: 60})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	before := []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL", "LOGIN-DELAY 60", "EXPIRE 30 USER"}
	if got := c.Capa(); !reflect.DeepEqual(got, before) {
		t.Errorf("CAPA before login = %q, want %q", got, before)
	}
	c.Script(`
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *`)
	after := []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL", "LOGIN-DELAY 60"}
	if got := c.Capa(); !reflect.DeepEqual(got, after) {
		t.Errorf("CAPA after login = %q, want %q", got, after)
	}
}
