#!/bin/bash
# sqsd on Elastic Beanstalk: runs sqsd as sqsd-rs.service in place of EB's own
# worker daemon (sqsd.service). The platform hooks call it, one step each:
#
#   sqsd-eb.sh install  prebuild: install /usr/local/bin/sqsd, checking its
#                       SHA-256, the unit and the optional override file. It
#                       stops nothing, so a bad binary fails the deployment
#                       before anything was touched.
#   sqsd-eb.sh stop     predeploy: stop and mask EB's daemon, and stop ours
#                       (it drains) before the application is replaced.
#   sqsd-eb.sh start    postdeploy: enable and (re)start ours, which reads the
#                       EB configuration just written for this deployment.
#
# The binary comes from the bundle (.platform/sqsd/sqsd with its hash in
# .platform/sqsd/sqsd.sha256) or, when the environment property
# SQSD_BINARY_URL is set, from that https:// or s3:// URL with its hash in
# SQSD_BINARY_SHA256. A binary whose hash differs is never installed.
#
# Every step can run again without harm. For tests, SQSD_EB_ROOT moves every
# file this script reads or writes under another directory, and systemctl,
# get-config, curl and aws are taken from PATH.
set -euo pipefail

root=${SQSD_EB_ROOT:-/}
root=${root%/}
PATH="$PATH:/opt/elasticbeanstalk/bin"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

unit=sqsd-rs.service
eb_unit=sqsd.service
bin=$root/usr/local/bin/sqsd
unit_file=$root/etc/systemd/system/$unit
eb_unit_file=$root/etc/systemd/system/$eb_unit
eb_dropin=$root/etc/systemd/system/$eb_unit.d/50-replaced-by-sqsd-rs.conf
env_file=$root/etc/sqsd-rs/sqsd.env
eb_config=$root/etc/aws-sqsd.d/default.yaml
url_property=SQSD_BINARY_URL
sha_property=SQSD_BINARY_SHA256
# A release build is about 20 MB and a debug build about 300 MB; a download
# past this bound is not sqsd and is cut off.
max_bytes=$((1024 * 1024 * 1024))

# Temporary files (a download, and a copy about to be renamed into place),
# removed if the script stops early.
download=""
tmp=""
trap 'rm -f ${download:+"$download"} ${tmp:+"$tmp"}' EXIT

say() { echo "sqsd-rs: $*"; }
die() {
  echo "sqsd-rs: error: $*" >&2
  exit 1
}

# An environment property of the EB environment, empty when it is not set.
property() {
  local value
  command -v get-config >/dev/null 2>&1 || return 0
  value=$(get-config environment -k "$1" 2>/dev/null) || return 0
  printf '%s' "$value"
}

sha256_of() { sha256sum "$1" | cut -d ' ' -f 1; }

# A SHA-256 in hex from TEXT (its first word, as sha256sum writes it), in
# lower case; dies naming WHERE it came from when it is not one.
parse_hash() { # TEXT WHERE
  local hash rest
  read -r hash rest <<<"$1" || true
  hash=${hash,,}
  if [[ ! $hash =~ ^[0-9a-f]{64}$ ]]; then
    die "$2 must hold the binary's SHA-256 (64 hex digits, as sha256sum prints it)"
  fi
  printf '%s' "$hash"
}

# The host and path of a URL, without a query (a presigned URL's signature).
shown() { printf '%s' "${1%%\?*}"; }

fetch() { # URL DEST
  case $1 in
  https://*)
    curl --fail --silent --show-error --location --proto =https --proto-redir =https \
      --connect-timeout 10 --max-time 300 --retry 3 --retry-max-time 60 \
      --max-filesize "$max_bytes" --output "$2" "$1" ||
      die "could not download $(shown "$1") (property $url_property)"
    ;;
  s3://*)
    timeout 300 aws s3 cp --only-show-errors "$1" "$2" ||
      die "could not copy $1 (property $url_property); the instance profile needs s3:GetObject on it"
    ;;
  *)
    die "property $url_property must be an https:// or s3:// URL, not $(shown "$1")"
    ;;
  esac
  if [ "$(stat -c %s "$2")" -gt "$max_bytes" ]; then
    die "$(shown "$1") is larger than $max_bytes bytes: not an sqsd binary"
  fi
}

# Dies unless FILE has the SHA-256 WANT; WHAT names it for the message.
verify() { # FILE WANT WHAT
  local got
  got=$(sha256_of "$1")
  if [ "$got" != "$2" ]; then
    die "SHA-256 mismatch for $3: expected $2, got $got; nothing was installed"
  fi
}

# Copies SRC to DEST with MODE through a temporary file and a rename, so that
# DEST is never seen half written; does nothing when DEST is already SRC.
install_file() { # SRC DEST MODE
  if [ -f "$2" ] && [ "$(sha256_of "$1")" = "$(sha256_of "$2")" ]; then
    chmod "$3" "$2"
    return 0
  fi
  mkdir -p "$(dirname "$2")"
  tmp=$(mktemp "$2.XXXXXX")
  cp "$1" "$tmp"
  chmod "$3" "$tmp"
  mv -f "$tmp" "$2"
  tmp=""
  say "installed ${2#"$root"}"
}

cmd_install() {
  local url want what src
  url=$(property "$url_property")
  if [ -n "$url" ]; then
    want=$(parse_hash "$(property "$sha_property")" "environment property $sha_property")
    what=$(shown "$url")
    if [ -f "$here/sqsd" ]; then
      say "property $url_property is set: using it, not .platform/sqsd/sqsd"
    fi
  elif [ -f "$here/sqsd" ]; then
    [ -f "$here/sqsd.sha256" ] ||
      die ".platform/sqsd/sqsd.sha256 is missing: write it with: sha256sum sqsd > sqsd.sha256"
    want=$(parse_hash "$(head -c 1024 "$here/sqsd.sha256")" ".platform/sqsd/sqsd.sha256")
    what=".platform/sqsd/sqsd"
  else
    die "no sqsd binary: put it at .platform/sqsd/sqsd with .platform/sqsd/sqsd.sha256, or set the environment properties $url_property and $sha_property"
  fi

  if [ -f "$bin" ] && [ "$(sha256_of "$bin")" = "$want" ]; then
    chmod 0755 "$bin"
    say "sqsd $want is already installed"
  else
    # Checked where it is (a download outside the root), so that a wrong
    # binary leaves no trace; checked again once copied beside its place.
    src=$here/sqsd
    if [ -n "$url" ]; then
      download=$(mktemp "${TMPDIR:-/tmp}/sqsd-download.XXXXXX")
      fetch "$url" "$download"
      src=$download
    fi
    verify "$src" "$want" "$what"
    mkdir -p "$(dirname "$bin")"
    tmp=$(mktemp "$(dirname "$bin")/.sqsd.XXXXXX")
    cp "$src" "$tmp"
    verify "$tmp" "$want" "the copy of $what"
    chmod 0755 "$tmp"
    "$tmp" --version >/dev/null 2>&1 ||
      die "$what does not run on this instance (built for another architecture?); nothing was installed"
    mv -f "$tmp" "$bin"
    tmp=""
    say "installed /usr/local/bin/sqsd ($want) from $what"
  fi

  install_file "$here/$unit" "$unit_file" 0644
  # Optional overrides (SQSD_* variables): they beat EB's file.
  if [ -f "$here/sqsd.env" ]; then
    install_file "$here/sqsd.env" "$env_file" 0600
  elif [ -f "$env_file" ]; then
    rm -f "$env_file"
    say "removed ${env_file#"$root"}: the bundle has no .platform/sqsd/sqsd.env"
  fi
}

# systemd's LoadState of a unit: loaded, masked, not-found, ...
load_state() {
  local line
  line=$(systemctl show -p LoadState "$1")
  printf '%s' "${line#LoadState=}"
}

# Stops EB's daemon and keeps it from starting again, so that one daemon
# consumes the queue. A unit file of its own in /etc/systemd/system cannot be
# masked (systemctl would have to overwrite it); a drop-in then makes every
# start of it a no-op for as long as sqsd-rs.service is installed.
retire_eb_daemon() {
  local state
  state=$(load_state "$eb_unit")
  if [ "$state" = not-found ]; then
    return 0
  fi
  if [ "$state" != masked ] && [ -f "$eb_unit_file" ] && [ ! -L "$eb_unit_file" ]; then
    if [ ! -f "$eb_dropin" ]; then
      mkdir -p "$(dirname "$eb_dropin")"
      tmp=$(mktemp "$eb_dropin.XXXXXX")
      cat >"$tmp" <<EOF
# Written by sqsd's Elastic Beanstalk hooks: sqsd-rs.service replaces this
# daemon. It cannot start while /etc/systemd/system/$unit exists.
[Unit]
ConditionPathExists=!/etc/systemd/system/$unit
EOF
      chmod 0644 "$tmp"
      mv -f "$tmp" "$eb_dropin"
      tmp=""
      systemctl daemon-reload
    fi
    say "stopping $eb_unit (EB's daemon); its unit file is in /etc, so a drop-in keeps it from starting"
    systemctl stop "$eb_unit"
    return 0
  fi
  say "stopping $eb_unit (EB's daemon) and keeping it masked"
  systemctl stop "$eb_unit"
  if [ "$state" != masked ]; then
    systemctl mask "$eb_unit"
  fi
}

cmd_stop() {
  retire_eb_daemon
  if [ "$(load_state "$unit")" != not-found ]; then
    say "stopping $unit: it drains before the application is replaced"
    systemctl stop "$unit"
  fi
}

cmd_start() {
  [ -f "$eb_config" ] ||
    die "${eb_config#"$root"} is missing: these hooks are for a worker environment, whose daemon configuration EB writes there"
  [ -x "$bin" ] || die "/usr/local/bin/sqsd is missing: the prebuild hook installs it"
  [ -f "$unit_file" ] || die "${unit_file#"$root"} is missing: the prebuild hook installs it"
  systemctl daemon-reload
  retire_eb_daemon
  systemctl enable "$unit"
  systemctl restart "$unit"
  say "$unit (re)started; see: systemctl status $unit; journalctl -u $unit"
}

case "${1:-}" in
install) cmd_install ;;
stop) cmd_stop ;;
start) cmd_start ;;
*)
  echo "usage: $0 install|stop|start" >&2
  exit 2
  ;;
esac
