package scannertest

// eicarReversed holds the EICAR test file back to front, in two pieces, so
// that neither this file nor a compiled test binary contains it.
var eicarReversed = [...]string{
	`*H+H$!ELIF-TSET-SURIVITNA-`,
	`DRADNATS-RACIE$}7)CC7)^P(45XZP\4[PA@%P!O5X`,
}

// EICAR returns the 68-byte anti-virus test file in a new slice.
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
