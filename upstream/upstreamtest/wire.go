package upstreamtest

// crlf turns every bare LF (not preceded by CR) into CRLF; bare CRs stay.
func crlf(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+len(msg)/32+2)
	for i, b := range msg {
		if b == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, b)
	}
	return out
}

// WireForm returns what Dovecot sends for msg, minus dot-stuffing and ".CRLF".
func WireForm(msg []byte) []byte {
	out := crlf(msg)
	if len(out) == 0 || out[len(out)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// ListSize returns Dovecot's LIST, STAT and "+OK n octets" size for msg.
func ListSize(msg []byte) int64 {
	n := int64(len(msg))
	for i, b := range msg {
		if b == '\n' && (i == 0 || msg[i-1] != '\r') {
			n++
		}
	}
	return n
}
