package scannertest

import "strings"

// gtubePieces are the GTUBE string in pieces, so that no file holds it
// (see the package documentation).
var gtubePieces = []string{
	"XJS*C4JDBQADN1.NSBN3*2IDNEN*",
	"GTUBE", "-STANDARD-ANTI-UBE-TEST-",
	"EMAIL", "*C.34X",
}

// GTUBE returns the 68-byte Generic Test for Unsolicited Bulk Email, which
// makes SpamAssassin score a message 1000 points when it is in the body
// (docs/scanners.md, spamd sizes and rules).
func GTUBE() []byte {
	return []byte(strings.Join(gtubePieces, ""))
}
