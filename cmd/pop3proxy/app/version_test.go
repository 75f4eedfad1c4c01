package app

import (
	"runtime/debug"
	"testing"
)

func TestVersionLine(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"released", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
			Settings: settings("vcs.revision", "abc123", "vcs.time", "2026-11-28T07:48:03Z", "vcs.modified", "false")},
			true, "pop3proxy v1.2.3 (revision abc123, 2026-11-28) go1.26.8"},
		{"modified checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261128074803-abc123def456+dirty"},
			Settings: settings("vcs.revision", "abc123def456", "vcs.time", "2026-11-28T07:48:03Z", "vcs.modified", "true")},
			true, "pop3proxy v0.0.0-20261128074803-abc123def456+dirty (revision abc123def456, 2026-11-28, modified) go1.26.8"},
		{"devel without VCS", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			true, "pop3proxy (devel) go1.26.8"},
		{"no version recorded", &debug.BuildInfo{}, true, "pop3proxy (devel)"},
		{"no build information", nil, false, "pop3proxy (unknown version: no build information in this binary)"},
	} {
		if got := versionLine(tc.bi, tc.ok); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}
