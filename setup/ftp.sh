#!/usr/bin/env bash
# FTP servers that apt alone cannot provide (see ../shared/references/SERVERS.md):
#  - the system account ftptest that vsftpd logs in through PAM (and that the
#    other servers map their virtual user to), with a known password;
#  - proftpd-core and pure-ftpd, which conflict with vsftpd in apt: fetched with
#    `apt-get download` and unpacked with `dpkg-deb -x` under /opt/aviary/servers.
# Idempotent: downloads only what is missing. Keep FTP_USER/FTP_PASSWORD in step
# with servers/ftp.py.
set -euo pipefail

FTP_USER=ftptest
FTP_PASSWORD=aviary-ftp   # a test account, reachable on 127.0.0.1 only
SERVERS_DIR=/opt/aviary/servers

say() { printf 'setup/ftp: %s\n' "$*" >&2; }

if [[ $EUID -ne 0 ]]; then
  say "not root: skipping the ftp account and servers (vsftpd, proftpd, pure-ftpd need root)"
  exit 0
fi

# vsftpd chdirs to the home directory before local_root, so it must exist: use /.
if ! id "$FTP_USER" >/dev/null 2>&1; then
  say "creating system account $FTP_USER"
  useradd -M -d / -s /bin/sh "$FTP_USER"
fi
# Setting the password again is cheap and keeps it in step with the harness.
echo "$FTP_USER:$FTP_PASSWORD" | chpasswd

# unpack NAME PROGRAM PACKAGE...: apt-get download + dpkg-deb -x into SERVERS_DIR/NAME.
unpack() {
  local name=$1 program=$2; shift 2
  local dest="$SERVERS_DIR/$name"
  [[ -x "$dest/$program" ]] && return 0
  say "fetching $* into $dest"
  local tmp
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt-get download drops to the _apt user to write here
  (cd "$tmp" && apt-get download -qq "$@" >/dev/null 2>&1) \
    || (cd "$tmp" && apt-get update -qq && apt-get download -qq "$@" >/dev/null)
  mkdir -p "$dest"
  local deb
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dest"; done
  rm -rf "$tmp"
  [[ -x "$dest/$program" ]] || { say "$dest/$program missing after unpacking"; exit 1; }
}

unpack proftpd usr/sbin/proftpd proftpd-core
unpack pure-ftpd usr/sbin/pure-ftpd pure-ftpd pure-ftpd-common
