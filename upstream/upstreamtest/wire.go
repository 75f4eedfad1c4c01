package upstreamtest

// crlf returns msg with every bare LF (one not preceded by CR) replaced by
// CRLF; everything else, bare CRs included, is kept.
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

// WireForm returns the bytes a client receives from Dovecot for a message
// stored as msg, without the dot-stuffing and the terminating ".CRLF" line
// (see the package doc).
func WireForm(msg []byte) []byte {
	out := crlf(msg)
	if len(out) == 0 || out[len(out)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// ListSize returns the size Dovecot reports in LIST, STAT and RETR's
// "+OK n octets" for a message stored as msg (see the package doc).
func ListSize(msg []byte) int64 {
	n := int64(len(msg))
	for i, b := range msg {
		if b == '\n' && (i == 0 || msg[i-1] != '\r') {
			n++
		}
	}
	return n
}
