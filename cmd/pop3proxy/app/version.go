package app

import (
	"runtime/debug"
	"strings"
	"time"
)

// versionLine describes the binary from its build information: the module
// version, then the VCS revision, its commit date and whether the tree had
// uncommitted changes, as `go build` records them:
//
//	pop3proxy v0.0.0-20261128070000-abc123def456+dirty (revision abc123def456..., 2026-11-28, modified)
//
// A binary built outside a module or repository says "(devel)" or
// "(unknown)" and leaves out what was not recorded.
func versionLine(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "pop3proxy (unknown version: no build information in this binary)"
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var revision, date string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			date = s.Value
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
				date = t.UTC().Format(time.DateOnly)
			}
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	var vcs []string
	if revision != "" {
		vcs = append(vcs, "revision "+revision)
	}
	if date != "" {
		vcs = append(vcs, date)
	}
	if modified {
		vcs = append(vcs, "modified")
	}
	line := "pop3proxy " + version
	if len(vcs) > 0 {
		line += " (" + strings.Join(vcs, ", ") + ")"
	}
	if bi.GoVersion != "" {
		line += " " + bi.GoVersion
	}
	return line
}
