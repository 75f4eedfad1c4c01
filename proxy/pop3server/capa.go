package pop3server

import (
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// handleCapa answers CAPA (RFC 2449 §5). The server's own capabilities
// are announced in both states, as RFC 2449 §5 requires of anything
// announced before login; STLS only where it can be used (RFC 2595 §4).
// AUTH-RESP-CODE is not announced: a backend may refuse credentials with
// codes other than [AUTH] (RFC 3206 §6).
func (c *conn) handleCapa(arg string) error {
	if err := requireNoArgs(arg); err != nil {
		return err
	}
	// Collected before "+OK" so that a failing session cannot leave a
	// half-written list.
	caps := make([]string, 0, 12)
	if !c.plaintextRefused() {
		caps = append(caps, "USER", "SASL "+strings.Join(c.cfg.mechanisms(), " "))
	}
	caps = append(caps, "RESP-CODES", "PIPELINING")
	if c.state == stateAuthorization && c.cfg.tls != nil && c.info.TLS == nil {
		caps = append(caps, "STLS")
	}
	if c.state == stateAuthorization {
		caps = append(caps, c.cfg.prelogin...)
		caps = c.appendOptionCapabilities(caps, true)
	} else {
		caps = c.appendSessionCapabilities(caps)
	}
	if c.cfg.Implementation != "" {
		caps = append(caps, "IMPLEMENTATION "+c.cfg.Implementation)
	}
	c.writeLine("+OK capability list follows")
	for _, capa := range caps {
		c.writeLine(capa)
	}
	c.bw.Write(terminator)
	return nil
}

// appendOptionCapabilities announces Options.LoginDelay and Expire, an
// EXPIRE with USER only before login (see Options.Expire).
func (c *conn) appendOptionCapabilities(caps []string, beforeLogin bool) []string {
	if c.cfg.LoginDelay > 0 {
		caps = append(caps, "LOGIN-DELAY "+strconv.Itoa(c.cfg.LoginDelay))
	}
	if c.cfg.Expire != "" && (beforeLogin || !strings.HasSuffix(c.cfg.Expire, " USER")) {
		caps = append(caps, "EXPIRE "+c.cfg.Expire)
	}
	return caps
}

// appendSessionCapabilities drops what the server would not implement.
func (c *conn) appendSessionCapabilities(caps []string) []string {
	_, top := c.session.(TopSession)
	_, uidl := c.session.(UIDLSession)
	cs, ok := c.session.(CapabilitySession)
	if !ok {
		if top {
			caps = append(caps, "TOP")
		}
		if uidl {
			caps = append(caps, "UIDL")
		}
		return c.appendOptionCapabilities(caps, false)
	}
	seen := make(map[string]bool, 4)
	for _, capa := range cs.Capabilities() {
		tag, param, _ := strings.Cut(capa, " ")
		tag = strings.ToUpper(tag)
		var valid bool
		switch tag {
		case "TOP":
			valid = top && param == ""
		case "UIDL":
			valid = uidl && param == ""
		case "EXPIRE":
			// "USER" is allowed only before login (RFC 2449 §6.7).
			valid = validExpire(param) && !strings.HasSuffix(param, " USER")
		case "LOGIN-DELAY":
			valid = isDigits(param)
		}
		if !valid || seen[tag] {
			c.log.Debug("capability not announced", zap.String("capability", capa))
			continue
		}
		seen[tag] = true
		if param == "" {
			caps = append(caps, tag)
		} else {
			caps = append(caps, tag+" "+param)
		}
	}
	return caps
}

func isDigits(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
