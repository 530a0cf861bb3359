#!/usr/bin/env bash
# Ensures a PostgreSQL server is installed and prints its bin dir (the one holding initdb,
# pg_ctl and postgres) on stdout; everything else goes to stderr.
# Installs Debian's `postgresql` package when none is found (needs root and apt-get).
# Idempotent: when PostgreSQL is already there it only looks, which takes milliseconds.
# Exit status 1 with a reason on stderr when PostgreSQL is absent and cannot be installed.
set -euo pipefail

find_bindir() {
  local dir
  # Debian/Ubuntu: /usr/lib/postgresql/<major>/bin, newest major first.
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -rn); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  # Elsewhere (Homebrew, other distributions): the server tools on PATH.
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

find_bindir && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_postgres: PostgreSQL is not installed and there is no apt-get to install it" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure_postgres: PostgreSQL is not installed; installing it needs root" \
       "(run: sudo $0)" >&2
  exit 1
fi
echo "ensure_postgres: installing Debian's postgresql package" >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } >&2 || {
  echo "ensure_postgres: apt-get could not install postgresql" >&2
  exit 1
}
find_bindir || { echo "ensure_postgres: installed, but no initdb/pg_ctl found" >&2; exit 1; }
