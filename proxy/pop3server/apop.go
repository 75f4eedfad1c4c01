package pop3server

import (
	"crypto/md5"
	"encoding/hex"
	"strconv"
	"time"
)

// APOPDigest returns the APOP digest of RFC 1939 §7: the lower-case hex MD5
// of the timestamp (angle brackets included) followed by the secret.
// Compare it with crypto/subtle.ConstantTimeCompare.
func APOPDigest(timestamp, secret string) string {
	sum := md5.Sum([]byte(timestamp + secret))
	return hex.EncodeToString(sum[:])
}

// Digits of a uint64 counter and of a positive int64 clock in nanoseconds.
const (
	maxCounterDigits = 20
	maxClockDigits   = 19
)

// apopTimestamp returns "<pid.counter.clock@hostname>". RFC 1939 §7 wants
// a new one per greeting; the counter ensures it when the clock stands still.
func (s *Server) apopTimestamp(cfg *config) string {
	b := make([]byte, 0, cfg.maxTimestampLen())
	b = append(b, '<')
	b = append(b, cfg.pid...)
	b = append(b, '.')
	b = strconv.AppendUint(b, s.apopCounter.Add(1), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, '@')
	b = append(b, cfg.Hostname...)
	b = append(b, '>')
	return string(b)
}

func (c *config) maxTimestampLen() int {
	return len("<") + len(c.pid) + len(".") + maxCounterDigits + len(".") + maxClockDigits + len("@") + len(c.Hostname) + len(">")
}
