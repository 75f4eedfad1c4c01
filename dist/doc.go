// Package dist holds the service files for installing pop3proxy on a
// machine: pop3proxy.service (systemd), org.pop3proxy.pop3proxy.plist
// (launchd). The Windows service is built into the binary (pop3proxy
// -service install). It has no Go code; its tests check the files with the
// tools that will read them.
package dist
