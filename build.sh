#!/usr/bin/env bash
# ./build.sh        build bin/upgradectl, static, version stamped
# ./build.sh test   set up a fresh machine for the tests (as root: the Debian
#                   packages the real-component tests use, once), then gofmt,
#                   go vet and the whole test suite
# ./build.sh bench  the benchmarks against the standard tools, BENCH_COUNT
#                   (5) paired runs each, and one table of their ratios:
#                   median and min-max
# ./build.sh dist   dist/: the binary, its manual page and shell completions,
#                   and a .deb and an .rpm of them with the commented default
#                   configuration (nfpm, pinned as a Go tool in go.mod)
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the tests drive for real (see docs/testing.md).
TEST_PACKAGES=(
	xorriso isomd5sum chrony systemd-container debootstrap qemu-system-x86
	linux-image-amd64 busybox-static cpio kmod btrfs-progs xfsprogs e2fsprogs
	fuse3 acl attr libcap2-bin util-linux file genisoimage libarchive-tools zsh fish
	prometheus-node-exporter rpm gnupg debian-archive-keyring etcd-server openssl
)

version() {
	git describe --always --dirty --tags 2>/dev/null || echo dev
}

build() {
	mkdir -p bin
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(version)" -o bin/upgradectl .
	local what
	what=$(file -b bin/upgradectl 2>/dev/null || true)
	if [ -z "$what" ]; then
		# No file(1): the ELF header has no PT_INTERP when static.
		if readelf -l bin/upgradectl 2>/dev/null | grep -q INTERP; then
			echo "build.sh: bin/upgradectl is dynamically linked" >&2
			exit 1
		fi
	elif ! grep -qE 'statically linked|static-pie linked' <<<"$what"; then
		echo "build.sh: bin/upgradectl is not statically linked: $what" >&2
		exit 1
	fi
	echo "built bin/upgradectl $(version)"
}

setup() {
	local missing=()
	for p in "${TEST_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "build.sh: not root, not installing ${missing[*]}: the tests that need them will skip" >&2
		return 0
	fi
	echo "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
}

checks() {
	local bad
	bad=$(gofmt -l . | grep -v '^vendor/' || true)
	if [ -n "$bad" ]; then
		echo "build.sh: gofmt would change: $bad" >&2
		exit 1
	fi
	go vet ./...
}

# pkgversion is a package version from git: 0.N+gHASH (N commits).
pkgversion() {
	local n h
	n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
	h=$(git rev-parse --short HEAD 2>/dev/null || echo dev)
	echo "0.$n+g$h"
}

dist() {
	build
	rm -rf dist
	mkdir -p dist/completions
	cp bin/upgradectl dist/upgradectl
	bin/upgradectl manpage | gzip -9n >dist/upgradectl.8.gz
	for sh in bash zsh fish; do
		bin/upgradectl completion "$sh" >"dist/completions/$sh"
	done
	UPGRADECTL_PKG_VERSION=$(pkgversion)
	export UPGRADECTL_PKG_VERSION
	for p in deb rpm; do
		go tool nfpm pkg --config packaging/nfpm.yaml --packager "$p" --target dist/
	done
	ls -l dist
}

case "${1:-build}" in
build)
	build
	;;
test)
	setup
	build
	checks
	# The real-component tests use the built binary (containers, VMs).
	UPGRADECTL_BIN="$PWD/bin/upgradectl" go test -count=1 -timeout 75m "${@:2}" ./...
	;;
dist)
	dist
	;;
bench)
	setup
	build
	# N paired runs of each benchmark (BENCH_COUNT, 5 by default), then
	# one table: each ratio's median and its min-max.
	mkdir -p bin
	go build -o bin/benchtable ./internal/benchtable
	# The machine the table was measured on heads it.
	echo "measured $(date -u +%Y-%m-%dT%H:%MZ) at $(version) on $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
	UPGRADECTL_BIN="$PWD/bin/upgradectl" go test -run '^$' -bench "${2:-.}" -benchtime 1x -count "${BENCH_COUNT:-5}" -timeout 60m ./... |
		bin/benchtable
	;;
*)
	echo "usage: ./build.sh [build|test|bench|dist]" >&2
	exit 2
	;;
esac
