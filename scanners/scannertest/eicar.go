package scannertest

// eicarReversed holds the EICAR test file back to front, in two pieces, so
// that neither this source file nor the compiled test binaries contain the
// 68 bytes that every virus scanner flags: a scanner on a developer's
// machine or in CI would otherwise quarantine the repository or the test
// binary. EICAR reverses them at run time.
var eicarReversed = [...]string{
	`*H+H$!ELIF-TSET-SURIVITNA-`,
	`DRADNATS-RACIE$}7)CC7)^P(45XZP\4[PA@%P!O5X`,
}

// EICAR returns the 68-byte EICAR anti-virus test file (protocols.md §4.4:
// MD5 44d88612fea8a8f36de82e1278abb02f), a new slice on every call. Every
// scanner reports it as a virus; StartClamd's signature matches it raw, in
// a text body and as a base64 attachment.
func EICAR() []byte {
	var fwd []byte
	for _, piece := range eicarReversed {
		fwd = append(fwd, piece...)
	}
	out := make([]byte, len(fwd))
	for i, b := range fwd {
		out[len(fwd)-1-i] = b
	}
	return out
}
