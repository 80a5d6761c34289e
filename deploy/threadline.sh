#!/bin/sh
# `threadline` for administrators on the server: runs the command as the service user, with the same
# configuration and environment as the systemd units. Install as /usr/local/bin/threadline, then e.g.
#   threadline status
#   threadline user add jane@acme.com --name "Jane Doe" --role admin
#   threadline backup /var/backups/threadline/before-upgrade.backup
set -eu
if [ "$(id -un)" != threadline ]; then
    exec sudo -u threadline -- "$0" "$@"
fi
set -a
. /etc/threadline/threadline.env
set +a
export THREADLINE_CONFIG=/etc/threadline/threadline.toml
cd /var/lib/threadline
exec /opt/threadline/venv/bin/threadline "$@"
