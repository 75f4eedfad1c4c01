package pop3server_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

type cred = pop3server.TokenCredentials

func TestParseXOAUTH2(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want *cred // nil: malformed
	}{
		{"user=alice%pop.example:995\x01auth=Bearer ya29.a0Af-_~+/x==\x01\x01", &cred{User: "alice%pop.example:995", Token: "ya29.a0Af-_~+/x=="}},
		{"user=me@example.com@pop.example\x01auth=Bearer t\x01\x01", &cred{User: "me@example.com@pop.example", Token: "t"}},
		{"user=me#pop.example\x01auth=BEARER   t\x01\x01", &cred{User: "me#pop.example", Token: "t"}},
		{"auth=Bearer t\x01user=a=b\x01\x01", &cred{User: "a=b", Token: "t"}},
		{"user=gr\xc3\xbc\xc3\x9f%h\x01auth=Bearer t\x01\x01", &cred{User: "grüß%h", Token: "t"}},
		{"", nil},
		{"\x01", nil},
		{"\x01\x01", nil},
		{"user=a\x01auth=Bearer t\x01", nil}, // one ^A short
		{"user=a\x01auth=Bearer t\x01\x01\x01", nil}, // one too many
		{"user=a\x01auth=Bearer t", nil},
		{"user=\x01auth=Bearer t\x01\x01", nil},
		{"user=a\x01\x01", nil},
		{"auth=Bearer t\x01\x01", nil},
		{"user=a\x01auth=Bearer t\x01user=b\x01\x01", nil},
		{"user=a\x01auth=Bearer t\x01host=x\x01\x01", nil},
		{"user=a\x01auth=Basic dDp0\x01\x01", nil},
		{"user=a\x01auth=Bearer\x01\x01", nil},
		{"user=a\x01auth=Bearer \x01\x01", nil},
		{"user=a\x01auth=Bearert\x01\x01", nil},
		{"user=a\x01auth=Bearer t=x\x01\x01", nil}, // "=" only as padding
		{"user=a\x01auth=Bearer t u\x01\x01", nil}, // no space in a token
		{"user=a\r\nQUIT\x01auth=Bearer t\x01\x01", nil},
		{"user=a\x00b\x01auth=Bearer t\x01\x01", nil},
		{"user=a\x01auth=Bearer t\r\n\x01\x01", nil},
		{"user=a\x7fb\x01auth=Bearer t\x01\x01", nil},
		{"=a\x01auth=Bearer t\x01\x01", nil},
	} {
		got, ok := pop3server.ParseXOAUTH2([]byte(tc.msg))
		switch {
		case tc.want == nil && ok:
			t.Errorf("ParseXOAUTH2(%q) = %+v, want malformed", tc.msg, got)
		case tc.want != nil && !ok:
			t.Errorf("ParseXOAUTH2(%q) malformed, want %+v", tc.msg, *tc.want)
		case tc.want != nil && !reflect.DeepEqual(got, *tc.want):
			t.Errorf("ParseXOAUTH2(%q) = %+v, want %+v", tc.msg, got, *tc.want)
		}
	}
}

func TestParseOAUTHBEARER(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want *cred
	}{
		// RFC 7628 §4.1's example.
		{"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
			&cred{User: "user@example.com", Token: "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", Host: "server.example.com", Port: "143", CBFlag: "n"}},
		{"n,a=alice%pop.example:995,\x01auth=Bearer t\x01\x01", &cred{User: "alice%pop.example:995", Token: "t", CBFlag: "n"}},
		{"y,a=me@example.com#pop.example,\x01auth=Bearer t\x01\x01", &cred{User: "me@example.com#pop.example", Token: "t", CBFlag: "y"}},
		// RFC 5801 §4 escaping: "=2C" is ",", "=3D" is "=".
		{"n,a=a=2Cb=3Dc=3D=3D%h,\x01auth=Bearer t\x01\x01", &cred{User: "a,b=c==%h", Token: "t", CBFlag: "n"}},
		// No authorization identity: allowed, the backend decides.
		{"n,,\x01auth=Bearer t\x01\x01", &cred{Token: "t", CBFlag: "n"}},
		{"n,,\x01host=h\x01mfa=otp 123\x01Z=\x01port=0\x01auth=bearer t\x01\x01",
			&cred{Token: "t", Host: "h", Port: "0", CBFlag: "n", Extra: []pop3server.KeyValue{{Key: "mfa", Value: "otp 123"}, {Key: "Z", Value: ""}}}},
		{"", nil},
		{"\x01", nil}, // the answer to an error challenge (RFC 7628 §3.2.3)
		{"n,a=u,\x01\x01", nil},
		{"n,a=u,\x01host=h\x01\x01", nil},
		{"n,a=u\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,,\x01auth=Bearer t\x01\x01", nil},
		{"a=u,\x01auth=Bearer t\x01\x01", nil},
		{"F,n,a=u,\x01auth=Bearer t\x01\x01", nil},
		{"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01", nil},
		{"n,u,\x01auth=Bearer t\x01\x01", nil},
		{"n,a=,\x01auth=Bearer t\x01\x01", nil},
		{"n,a=a,b,\x01auth=Bearer t\x01\x01", nil},
		{"n,a=a=2,\x01auth=Bearer t\x01\x01", nil},
		{"n,a=a=2D,\x01auth=Bearer t\x01\x01", nil},
		{"n,a=a=,\x01auth=Bearer t\x01\x01", nil},
		{"n,a=a\r\nb,\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", nil},
		{"n,a=u,\x01host=a\x01host=b\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01port=x\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01ho-st=h\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01=h\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01host\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01host=a\rb\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01host=a\nb\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01host=\xc3\xbc\x01auth=Bearer t\x01\x01", nil},
		{"n,a=u,\x01auth=Bearer t\x01", nil},
		{"n,a=u,\x01auth=Bearer t\x01\x01\x01", nil},
	} {
		got, ok := pop3server.ParseOAUTHBEARER([]byte(tc.msg))
		switch {
		case tc.want == nil && ok:
			t.Errorf("ParseOAUTHBEARER(%q) = %+v, want malformed", tc.msg, got)
		case tc.want != nil && !ok:
			t.Errorf("ParseOAUTHBEARER(%q) malformed, want %+v", tc.msg, *tc.want)
		case tc.want != nil && !reflect.DeepEqual(got, *tc.want):
			t.Errorf("ParseOAUTHBEARER(%q) = %+v, want %+v", tc.msg, got, *tc.want)
		}
	}
}

// Encode writes what a relay sends upstream: the user name rewritten and
// escaped, host and port replaced, the rest kept.
func TestTokenEncode(t *testing.T) {
	for _, tc := range []struct {
		mech string
		cred cred
		want string // "" for an error
	}{
		{pop3server.MechanismXOAUTH2, cred{User: "alice", Token: "ya29.x"}, "user=alice\x01auth=Bearer ya29.x\x01\x01"},
		{pop3server.MechanismOAUTHBEARER, cred{User: "a,b=c", Token: "t", Host: "pop.example", Port: "995", CBFlag: "y",
			Extra: []pop3server.KeyValue{{Key: "mfa", Value: "x"}}},
			"y,a=a=2Cb=3Dc,\x01host=pop.example\x01port=995\x01mfa=x\x01auth=Bearer t\x01\x01"},
		{pop3server.MechanismOAUTHBEARER, cred{Token: "t"}, "n,,\x01auth=Bearer t\x01\x01"},
		{pop3server.MechanismXOAUTH2, cred{Token: "t"}, ""},
		{pop3server.MechanismXOAUTH2, cred{User: "a\r\nQUIT", Token: "t"}, ""},
		{pop3server.MechanismXOAUTH2, cred{User: "a", Token: "t\r\nQUIT"}, ""},
		{pop3server.MechanismXOAUTH2, cred{User: "a\x01auth=Bearer x\x01\x01", Token: "t"}, ""},
		{pop3server.MechanismOAUTHBEARER, cred{User: "a", Token: "t", Host: "h\x01auth=Bearer x"}, ""},
		{pop3server.MechanismOAUTHBEARER, cred{User: "a", Token: "t", Port: "11O"}, ""},
		{pop3server.MechanismOAUTHBEARER, cred{User: "a", Token: "t", CBFlag: "p=tls-unique"}, ""},
		{pop3server.MechanismOAUTHBEARER, cred{User: "a", Token: "t", Extra: []pop3server.KeyValue{{Key: "auth", Value: "Bearer x"}}}, ""},
		{pop3server.MechanismOAUTHBEARER, cred{User: "a", Token: "t", Extra: []pop3server.KeyValue{{Key: "k", Value: "v\nw"}}}, ""},
		{"PLAIN", cred{User: "a", Token: "t"}, ""},
	} {
		got, err := tc.cred.Encode(tc.mech)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%s Encode(%+v) = %q, want an error", tc.mech, tc.cred, got)
		case tc.want != "" && (err != nil || string(got) != tc.want):
			t.Errorf("%s Encode(%+v) = %q, %v; want %q", tc.mech, tc.cred, got, err, tc.want)
		}
	}
}

// FuzzTokenSASL feeds arbitrary client messages to both parsers: nothing
// panics, and whatever parses encodes to a message that parses back to
// the same credentials, so a relay can never send upstream what it did not
// check (a CR, LF or NUL, a second "auth", a forged separator).
func FuzzTokenSASL(f *testing.F) {
	for _, s := range []string{
		"user=alice%pop.example:995\x01auth=Bearer ya29.a0Af\x01\x01",
		"n,a=a=2Cb=3Dc%h:110,\x01host=h\x01port=110\x01mfa=x y\x01auth=Bearer t==\x01\x01",
		"y,,\x01auth=bearer t\x01\x01",
		"\x01",
		"n,a=u,\x01auth=Bearer t\r\n\x01\x01",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, m := range []struct {
			name  string
			parse func([]byte) (cred, bool)
		}{
			{pop3server.MechanismXOAUTH2, pop3server.ParseXOAUTH2},
			{pop3server.MechanismOAUTHBEARER, pop3server.ParseOAUTHBEARER},
		} {
			c, ok := m.parse(msg)
			if !ok {
				continue
			}
			for _, field := range []string{c.User, c.Token, c.Host, c.Port} {
				if bytes.ContainsAny([]byte(field), "\r\n\x00\x01") {
					t.Fatalf("%s parsed %q into a field with CR, LF, NUL or ^A: %+v", m.name, msg, c)
				}
			}
			enc, err := c.Encode(m.name)
			if err != nil {
				t.Fatalf("%s: %q parsed to %+v, which does not encode: %v", m.name, msg, c, err)
			}
			again, ok := m.parse(enc)
			if !ok || !reflect.DeepEqual(again, c) {
				t.Fatalf("%s: %q parsed to %+v, encoded to %q, parsed back to %+v (%v)", m.name, msg, c, enc, again, ok)
			}
		}
	})
}
