#!/usr/bin/env bash
# Installs the real servers Threadline's tests talk to (Debian/Ubuntu): Dovecot for IMAP, Chromium for the
# browser tests, and the tools the deployment tests use (systemd-analyze checks the units in deploy/,
# pg_dump/pg_restore back up PostgreSQL). PostgreSQL is expected to be running already (see README).
# Safe to run repeatedly.
set -euo pipefail

missing=()
command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "threadline: please install ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2
    echo "threadline: tests that need them are skipped locally and fail under CI=true" >&2
    exit 0
fi
echo "threadline: installing ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
