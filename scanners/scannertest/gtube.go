package scannertest

import "strings"

// gtubePieces keep GTUBE out of every file (see the package documentation).
var gtubePieces = []string{
	"XJS*C4JDBQADN1.NSBN3*2IDNEN*",
	"GTUBE", "-STANDARD-ANTI-UBE-TEST-",
	"EMAIL", "*C.34X",
}

// GTUBE returns the 68-byte Generic Test for Unsolicited Bulk Email, 1000
// points in a body (docs/scanners.md, spamd sizes and rules).
func GTUBE() []byte {
	return []byte(strings.Join(gtubePieces, ""))
}
