#!/usr/bin/env bash
# Build cctools' Parrot (parrot_run) from a cctools source tree and install it where
# `aviary bench` looks for it. Not part of ./setup.sh: it takes minutes, and Debian's
# coop-computing-tools ships chirp_server but not parrot_run.
#
#   setup/parrot/build.sh SRC_DIR [PREFIX]
#
# SRC_DIR is a cctools checkout (it is copied, never changed). PREFIX defaults to
# $AVIARY_PARROT_PREFIX, else ~/.cache/aviary/cctools; parrot_run lands in PREFIX/bin.
# Only what Parrot needs is configured (dttools, chirp, ftp_lite, grow, parrot; no
# Globus, iRODS, XRootD, CVMFS, FUSE, Python or Perl bindings). The patches in
# setup/parrot/ are applied first. JOBS sets make's parallelism (default 2); pin
# the build yourself, e.g. `taskset -c 0 setup/parrot/build.sh ~/src/cctools`.
set -euo pipefail

say() { printf 'build-parrot: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: setup/parrot/build.sh SRC_DIR [PREFIX]"
here=$(cd "$(dirname "$0")" && pwd)
src=$1
prefix=${2:-${AVIARY_PARROT_PREFIX:-$HOME/.cache/aviary/cctools}}
[[ -x "$src/configure" && -f "$src/parrot/src/pfs_main.cc" ]] \
  || die "$src is not a cctools source tree (no configure or parrot/src/pfs_main.cc)"
for tool in gcc g++ make perl patch; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install build-essential perl patch"
done
[[ -f /usr/include/zlib.h ]] || die "zlib headers not found: apt-get install zlib1g-dev"
prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)

build=$(mktemp -d "${TMPDIR:-/tmp}/aviary-parrot-build-XXXXXX")
trap 'rm -rf "$build"' EXIT
say "copying $src to $build"
cp -a "$src/." "$build/"
cd "$build"
for p in "$here"/*.patch; do
  if patch -p1 --dry-run --reverse --force --silent < "$p" >/dev/null 2>&1; then
    say "already applied: $(basename "$p")"
  else
    patch -p1 --forward --silent < "$p" || die "patch $(basename "$p") does not apply to $src"
    say "applied $(basename "$p")"
  fi
done

say "configuring for $prefix (log: $build/configure.log)"
without=() with_no=()
for system in makeflow poncho resource_monitor doc taskvine work_queue; do
  without+=("--without-system-$system")
done
for package in curl cvmfs ext2fs fuse globus irods mysql perl python python3 readline swig uuid xrootd; do
  with_no+=("--with-$package-path" no)
done
./configure --prefix "$prefix" "${without[@]}" "${with_no[@]}" > configure.log 2>&1 \
  || { tail -5 configure.log >&2; die "configure failed"; }

say "building parrot with make -j${JOBS:-2} (log: make.log)"
make -j"${JOBS:-2}" parrot > make.log 2>&1 || { tail -15 make.log >&2; die "make failed"; }
make -C parrot install > install.log 2>&1 || { tail -5 install.log >&2; die "make install failed"; }

parrot="$prefix/bin/parrot_run"
"$parrot" -Q -- /bin/true 2>/dev/null || die "$parrot -Q -- /bin/true failed"
out=$("$parrot" -Q -- cat /proc/self/status 2>/dev/null | grep -c '^TracerPid:' || true)
[[ "$out" == 1 ]] || die "$parrot ran a program but its output was lost"
say "installed $parrot ($("$parrot" -v 2>/dev/null | head -1))"
say "aviary bench finds it there; elsewhere, set AVIARY_PARROT=/path/to/parrot_run"
