#!/usr/bin/env bash
# test.sh: the project's test command, for developers and CI (.ci/run).
#
#   ./test.sh                              everything: gofmt check, go vet ./...,
#                                          go build and go vet ./... for windows/amd64,
#                                          darwin/arm64 and linux/arm64,
#                                          go test -race -count=1 -timeout 20m ./...,
#                                          and the tests of docker/composetest
#   ./test.sh -run TestDovecot ./upstream/...   go test flags and packages
#   ./test.sh -v -run Curl                 flags only: the packages default to ./...
#
# Arguments go to `go test` after the defaults above, so they can override
# them (a later -timeout wins). If no argument names a package (./..., ../x,
# github.com/...), ./... is added. gofmt and go vet always check the whole
# module.
#
# Integration tests run real programs (Dovecot, clamd, spamd, HAProxy,
# Redis, curl, fetchmail, mpop, getmail, python3, buildah, systemd-analyze). Run as root, this script installs the missing ones with
# apt-get on Debian, without starting their system services. Otherwise
# those tests are skipped with a warning; with CI=true or
# POP3PROXY_INTEGRATION=require they fail instead (see
# internal/testinfra.IntegrationRequired).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# Programs the tests need, as "program:debian-package[,package...]".
# Add new integration dependencies here; services are kept from starting.
NEEDED=(
	"dovecot:dovecot-pop3d"
	"curl:curl"
	"fetchmail:fetchmail"
	"mpop:mpop"
	"getmail:getmail6"
	"python3:python3"
	"gcc:gcc,libc6-dev" # go test -race needs cgo
	"clamd:clamav-daemon"
	"spamd:spamd"
	"haproxy:haproxy"
	"rspamd:rspamd"
	"redis-server:redis-server" # the verdict cache's shared backend
	# The container and service files (docker/, dist/): buildah builds
	# the image, busybox (static) and git go into the test's stand-in
	# base image, spamc is spamd's health check, systemd-analyze checks
	# the unit. Nothing of these is started.
	"buildah:buildah"
	"busybox:busybox-static"
	"git:git"
	"spamc:spamc"
	"systemd-analyze:systemd"
)
# System services those packages may start on install, as
# "program:service". After this script installs the program, the service is
# stopped and disabled, should policy-rc.d not have prevented the start; a
# service of a program that was already installed is left alone.
SERVICES=(
	"dovecot:dovecot"
	"clamd:clamav-daemon"
	"clamd:clamav-freshclam" # would try to download signatures
	"spamd:spamd"
	"haproxy:haproxy"
	"rspamd:rspamd"
	"redis-server:redis-server"
)

say() { printf '%s\n' "test.sh: $*" >&2; }
loud() {
	printf '\n%s\n' "************************************************************************" >&2
	printf 'test.sh: %s\n' "$@" >&2
	printf '%s\n\n' "************************************************************************" >&2
}

# have PROGRAM: installed? Daemons live in sbin, often not in a user's PATH.
have() {
	if [[ $1 == busybox ]]; then
		# Only the static build runs in an empty image
		# (docker/image_test.go); ldd fails on a static program.
		command -v busybox >/dev/null 2>&1 && ! ldd "$(command -v busybox)" >/dev/null 2>&1
		return
	fi
	command -v "$1" >/dev/null 2>&1 && return 0
	local d
	for d in /usr/local/sbin /usr/sbin /sbin; do
		[[ -x "$d/$1" ]] && return 0
	done
	return 1
}

missing_programs=()
missing_packages=()
check_programs() {
	missing_programs=()
	missing_packages=()
	local entry prog pkgs
	for entry in "${NEEDED[@]}"; do
		prog=${entry%%:*}
		pkgs=${entry#*:}
		if ! have "$prog"; then
			missing_programs+=("$prog")
			IFS=, read -r -a more <<<"$pkgs"
			missing_packages+=("${more[@]}")
		fi
	done
}

# stop_services PROGRAM... stops and disables the system services of the
# given (just installed) programs. The tests start their own daemons on
# private ports; a system Dovecot on 110/995 is not wanted on a developer's
# machine. Only the system instance is touched: its pid comes from its pid
# file, never from a process name, so daemons started by tests survive.
stop_services() {
	local entry prog svc pidfile pid
	for entry in "${SERVICES[@]}"; do
		prog=${entry%%:*}
		svc=${entry#*:}
		[[ " $* " == *" $prog "* ]] || continue
		if [[ -d /run/systemd/system ]]; then # systemd is the init
			systemctl disable --now "$svc.service" "$svc.socket" >/dev/null 2>&1 || true
		else
			if command -v update-rc.d >/dev/null 2>&1; then
				update-rc.d "$svc" disable >/dev/null 2>&1 || true
			fi
			if command -v service >/dev/null 2>&1; then
				service "$svc" stop >/dev/null 2>&1 || true
			fi
		fi
		for pidfile in "/run/$svc/master.pid" "/run/$svc.pid" "/var/run/$svc/master.pid"; do
			[[ -r $pidfile ]] || continue
			pid=$(tr -dc 0-9 <"$pidfile")
			# A test instance always runs with "-c <its config>"; a stale
			# pid file must not hit one (or anything else).
			[[ -n $pid && -r /proc/$pid/cmdline ]] || continue
			tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$svc" || continue
			tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- ' -c ' && continue
			if kill -0 "$pid" 2>/dev/null; then
				say "stopping the system $svc (pid $pid)"
				kill "$pid" 2>/dev/null || true
			fi
		done
	done
}

install_packages() {
	say "installing ${missing_packages[*]}"
	# policy-rc.d exit 101 tells invoke-rc.d not to start services during
	# the install; keep one that already exists (container images have it).
	local policy=/usr/sbin/policy-rc.d created_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		created_policy=1
	fi
	local ok=0
	if apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_packages[@]}"; then
		ok=1
	fi
	[[ -n $created_policy ]] && rm -f "$policy"
	stop_services "${missing_programs[@]}"
	if [[ $ok != 1 ]]; then
		loud "apt-get could not install: ${missing_packages[*]}" \
			"integration tests that need them will be skipped (they fail under CI=true)."
	fi
}

check_programs
if ((${#missing_programs[@]} > 0)); then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
		install_packages
		check_programs
	fi
	if ((${#missing_programs[@]} > 0)); then
		loud "MISSING: ${missing_programs[*]} (Debian packages: ${missing_packages[*]})" \
			"Integration tests that need them will be SKIPPED (and FAIL under CI=true)." \
			"Run ./test.sh as root on Debian to install them."
	fi
fi

race=(-race)
if ! have gcc || [[ $(go env CGO_ENABLED) != 1 ]]; then
	loud "no C compiler or cgo disabled: running the tests WITHOUT the race detector."
	race=()
fi

say "gofmt"
unformatted=$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l)
if [[ -n $unformatted ]]; then
	say "these files need gofmt -w:"
	printf '%s\n' "$unformatted" | sed 's/^/  /' >&2
	exit 1
fi

say "go vet ./..."
go vet ./...

# The other platforms pop3proxy is built for must build and pass go vet
# too (build tags keep Unix-only code, tests included, off Windows).
CROSS=(windows/amd64 darwin/arm64 linux/arm64)
for target in "${CROSS[@]}"; do
	say "go build ./... and go vet ./... for $target"
	GOOS=${target%/*} GOARCH=${target#*/} go build ./...
	GOOS=${target%/*} GOARCH=${target#*/} go vet ./...
done

# Package arguments given? Otherwise test the whole module.
# docker/composetest is a module of its own (compose-go stays out of
# pop3proxy's go.mod): its tests run with the whole module (no package
# arguments, or ./...) or when it is named (./docker/composetest).
packages=(./...)
args=()
compose=all
named=()
for arg in "$@"; do
	case $arg in
	./docker/composetest | ./docker/composetest/...)
		compose=named
		continue
		;;
	./* | ../* | . | .. | github.com/*)
		packages=()
		named+=("$arg")
		;;
	esac
	args+=("$arg")
done
# Packages named, but not ./...: those only.
if [[ $compose == all && ${#named[@]} -gt 0 && " ${named[*]} " != *" ./... "* ]]; then
	compose=no
fi

# Only the compose module named: the main module's tests are not run.
if [[ $compose != named || ${#named[@]} -gt 0 ]]; then
	say "go test ${race[*]} -count=1 -timeout 20m ${args[*]-} ${packages[*]-}"
	go test "${race[@]}" -count=1 -timeout 20m "${args[@]+"${args[@]}"}" "${packages[@]+"${packages[@]}"}"
fi
if [[ $compose != no ]]; then
	flags=()
	for arg in "${args[@]+"${args[@]}"}"; do
		[[ " ${named[*]-} " == *" $arg "* ]] || flags+=("$arg")
	done
	say "go vet and go test ${flags[*]-} in docker/composetest (a module of its own)"
	(
		cd docker/composetest
		go vet ./...
		go test -count=1 -timeout 5m "${flags[@]+"${flags[@]}"}" ./...
	)
fi

# A full run also lets every fuzzer explore beyond its seed corpus for a
# little while (the seeds already ran as tests above). POP3PROXY_FUZZTIME
# sets how long each runs; 0 skips this step.
FUZZERS=(
	"./proxy/pop3server/:FuzzCommand"
	"./proxy/pop3server/:FuzzDotWriter"
	"./proxy/pop3server/:FuzzTokenSASL"
	"./upstream/:FuzzParseLogin"
	"./upstream/:FuzzDotReader"
	"./upstream/:FuzzStuffedReader"
)
fuzztime=${POP3PROXY_FUZZTIME:-10s}
if (($# == 0)) && [[ $fuzztime != 0 ]]; then
	for entry in "${FUZZERS[@]}"; do
		pkg=${entry%%:*}
		name=${entry#*:}
		# go test -fuzz with a pattern that matches nothing passes quietly.
		# grep reads all of the list (no -q): with pipefail, an early exit
		# could fail go test with SIGPIPE.
		if ! go test -list "^${name}\$" "$pkg" | grep -x "$name" >/dev/null; then
			say "fuzz target $name not found in $pkg (update FUZZERS in test.sh)"
			exit 1
		fi
		say "fuzzing $name in $pkg for $fuzztime"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
	done
fi
