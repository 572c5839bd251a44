#!/bin/sh
# Entrypoint of the messages image: runs the command (node) as daemon, never as root. Started as root (the default),
# it first makes certs/ and logs/ usable by daemon when they are host directories daemon cannot use, and stops the
# container, naming the directory and what to do, when it cannot. Started as another user (--user, user:), it runs
# the command as that user and changes nothing.
set -eu

[ "$(id -u)" = 0 ] || exec "$@"

die() {
  echo "entrypoint: $*" >&2
  exit 1
}
as_daemon() { setpriv --reuid=daemon --regid=daemon --clear-groups -- "$@"; }
usable() { as_daemon test -w "$1" -a -x "$1"; }
# Give a directory to the daemon group, group-writable, its owner unchanged (mounted from a clone, it stays yours).
share() { usable "$1" || { chgrp daemon "$1" && chmod g+rwx "$1"; } 2>/dev/null || true; }

# logs/: the service appends its log files there.
share logs
usable logs || die "/opt/messages/logs is not writable by daemon (uid 1) and could not be made so (a read-only \
mount?). Mount a directory uid 1 may write (on the host: sudo chgrp 1 logs && sudo chmod g+rwx logs), or run the \
container as the directory's owner (user: \"UID:GID\")."

# certs/: the service reads the pair MESSAGES_CERT_FILE and MESSAGES_KEY_FILE name; only when both are unset does it
# write one, certs/localhost.crt and .key, if either is missing (lib/service.ts). So a read-only certs/ holding a pair
# daemon can read is a valid setup.
cert=${MESSAGES_CERT_FILE:-certs/localhost.crt}
key=${MESSAGES_KEY_FILE:-certs/localhost.key}
if [ -z "${MESSAGES_CERT_FILE:-}${MESSAGES_KEY_FILE:-}" ] && { [ ! -e "$cert" ] || [ ! -e "$key" ]; }; then
  share certs
  usable certs || die "/opt/messages/certs holds no certificate and key ($cert, $key) and daemon (uid 1) cannot \
write the pair the service would generate there (a read-only mount?). Put your pair there, readable by uid 1, or \
mount the directory writable."
fi
for file in "$cert" "$key"; do
  [ ! -e "$file" ] || as_daemon test -r "$file" || die "$file is not readable by daemon (uid 1), the service's user. \
Give it to uid 1 on the host (sudo chown 1 <file>; a key stays mode 0600), or run the container as its owner \
(user: \"UID:GID\")."
done

# No capabilities left to regain and no setuid program that could give any back: node keeps only daemon's rights.
exec setpriv --reuid=daemon --regid=daemon --clear-groups --no-new-privs --bounding-set=-all -- "$@"
