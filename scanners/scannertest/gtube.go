package scannertest

import "strings"

// gtubePieces are the GTUBE string in pieces. No file in the repository may
// hold the whole string: a spam filter, or a mail or code scanner that
// honours it, would flag the source tree itself. SpamAssassin's GTUBE rule
// (20_body_tests.cf, score 1000) is in protocols.md §5.4.
var gtubePieces = []string{
	"XJS*C4JDBQADN1.NSBN3*2IDNEN*",
	"GTUBE", "-STANDARD-ANTI-UBE-TEST-",
	"EMAIL", "*C.34X",
}

// GTUBE returns the 68-byte Generic Test for Unsolicited Bulk Email, which
// makes SpamAssassin score a message 1000 points. It must be in the message
// body, after the blank line. It is assembled at run time from pieces so
// that no file contains it; do not write it into a file.
func GTUBE() []byte {
	return []byte(strings.Join(gtubePieces, ""))
}
