#!/bin/sh
# Installs this clone as a systemd service on a Debian/Ubuntu VM, or removes it with --uninstall; safe to run again.
# Needs root, a Node.js that package.json's engines accepts at /usr/local/bin/node or /usr/bin/node, with npm, and
# openssl; Redis is separate (apt-get install redis-server or valkey-server). Succeeds only once the service passes
# the smoke check. What it does and why: docs/deploy.md ("systemd").
set -eu
umask 022

app=/opt/messages
conf=/etc/messages
units="messages.service messages-watchdog.service messages-watchdog.timer"
src=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*)"

if [ "${1:-}" = --uninstall ]; then
  for unit in messages-watchdog.timer messages-watchdog.service messages.service; do
    systemctl disable --now "$unit" 2>/dev/null || true
  done
  for unit in $units; do
    rm -f "/etc/systemd/system/$unit"
    rm -rf "/etc/systemd/system/$unit.d"
  done
  systemctl daemon-reload
  rm -rf "$app" "$conf"
  if getent passwd messages >/dev/null; then userdel messages; fi
  if getent group messages >/dev/null; then groupdel messages; fi
  say "removed the units, $app (with its certs and logs), $conf and the messages user"
  exit 0
fi
[ $# -eq 0 ] || die "unknown argument: $1 (usage: $0 [--uninstall])"

# The node the unit runs: ExecStart=node resolves through systemd's search path, /usr/local/bin before /usr/bin.
install_node="install Node.js 24 LTS (an upstream build from nodejs.org in /usr/local, or NodeSource's nodejs \
package), or on Debian 13 Debian's own: apt-get install nodejs npm"
node=
for candidate in /usr/local/bin/node /usr/bin/node; do
  if [ -x "$candidate" ]; then
    node=$candidate
    break
  fi
done
[ -n "$node" ] || die "no node at /usr/local/bin/node or /usr/bin/node: $install_node"
# engines is "^20.19.0 || ^24.22.0 || ...": older than its lowest version is refused, a line it does not name is warned.
verdict=$("$node" -e '
  var want = require(process.argv[1]).engines.node.split("||").map(function (range) {
    return range.trim().replace(/^\^/, "").split(".").map(Number);
  });
  var have = process.versions.node.split(".").map(Number);
  function below(a, b) { return a[0] !== b[0] ? a[0] < b[0] : a[1] !== b[1] ? a[1] < b[1] : a[2] < b[2]; }
  var lowest = want.reduce(function (a, b) { return below(b, a) ? b : a; });
  var line = want.filter(function (v) { return v[0] === have[0]; })[0];
  console.log(below(have, lowest) || (line && below(have, line)) ? "old" : line ? "ok" : "untested");
' "$src/package.json") || die "$node does not run: $install_node"
engines=$(sed -n 's/^ *"node": "\(.*\)".*/\1/p' "$src/package.json")
version=$("$node" --version)
case $verdict in
  old) die "$node is $version, older than this service supports (package.json engines: $engines): $install_node" ;;
  untested) say "warning: $node is $version, a line the tests do not cover (package.json engines: $engines)" ;;
esac
# Upstream ended the 20 line on 2026-04-30: it still runs the service, but takes fixes only from a distribution.
case $version in
  v20.*) say "warning: $node is $version, past its upstream end of life (2026-04-30); prefer 24 LTS: $install_node" ;;
esac
PATH=$(dirname "$node"):$PATH # npm ci and its scripts use the same node
command -v npm >/dev/null || die "npm is missing: it comes with an upstream build and NodeSource's package; Debian's is apt-get install npm"
command -v openssl >/dev/null || die "openssl is missing: apt-get install openssl"

if ! getent passwd messages >/dev/null; then
  useradd --system --user-group --home-dir "$app" --no-create-home --shell /usr/sbin/nologin messages
  say "created the messages system user"
fi

# The code is root's and read-only to the service; only certs/ and logs/ belong to messages.
install -d -m 0755 "$app" "$app/systemd"
cp "$src/package.json" "$src/package-lock.json" "$src/tsconfig.json" "$src/server.ts" "$app/"
rm -rf "${app:?}/lib"
cp -R "$src/lib" "$app/lib"
install -m 0755 "$src/systemd/watchdog.sh" "$app/systemd/watchdog.sh"
(cd "$app" && npm ci --omit=dev --no-audit --no-fund --no-update-notifier --loglevel=error)
install -d -m 0750 -o messages -g messages "$app/certs" "$app/logs"
say "installed the app in $app"

# Generated as messages, so the key (mode 0600) is readable by the service and nobody else.
if [ ! -e "$app/certs/localhost.crt" ] || [ ! -e "$app/certs/localhost.key" ]; then
  (cd "$app" && runuser -u messages -- "$node" --require tsx/cjs lib/certs.ts)
fi

# Settings are the admin's: written once as commented templates, never overwritten.
install -d -m 0755 "$conf"
if [ ! -e "$conf/messages.env" ]; then
  install -m 0600 /dev/null "$conf/messages.env"
  cat >"$conf/messages.env" <<'EOF'
# messages.service settings (README "Configuration"); `systemctl restart messages` after a change.
#MESSAGES_PORT=5000
#MESSAGES_REDIS_HOST=localhost
#MESSAGES_REDIS_PASSWORD=
# GET /metrics for Prometheus, plain HTTP: another host's Prometheus needs an address it reaches, a private one
# (IPAddressAllow of the unit lets in private networks only); 0 as the port turns it off.
#MESSAGES_METRICS_BIND=127.0.0.1
#MESSAGES_METRICS_PORT=9464
# logrotate owns rotation: turn the service's own rotation off.
#MESSAGES_LOG_MAX_BYTES=0
EOF
  say "wrote $conf/messages.env"
fi
if [ ! -e "$conf/watchdog.env" ]; then
  install -m 0600 /dev/null "$conf/watchdog.env"
  cat >"$conf/watchdog.env" <<'EOF'
# messages-watchdog.service settings (systemd/watchdog.sh); read at every run.
#MESSAGES_WATCHDOG_NOTIFY=mail -s "messages restarted" root
# At most 35: two checks, their kill grace, the pause and the restart must end within TimeoutStartSec (2 min).
#MESSAGES_WATCHDOG_TIMEOUT=30
# With a certificate a CA issued: the name it carries, and the CA (a public one: /etc/ssl/certs/ca-certificates.crt).
#MESSAGES_WATCHDOG_DOMAIN=messages.example.com
#MESSAGES_WATCHDOG_CA_FILE=/etc/ssl/certs/ca-certificates.crt
EOF
  say "wrote $conf/watchdog.env"
fi

for unit in $units; do
  install -m 0644 "$src/systemd/$unit" "/etc/systemd/system/$unit"
done
systemctl daemon-reload
systemctl enable messages.service messages-watchdog.timer
# reset-failed: a run after fixing a crash loop must not be refused by the start limit it ended in. restart, not
# start: a second run must serve the code it just installed.
systemctl reset-failed messages.service 2>/dev/null || true
systemctl restart messages.service

# setting FILE NAME DEFAULT: the last NAME= line of an environment file, as systemd reads it, without quotes.
setting() {
  value=$(sed -n "s/^$2=//p" "$1" | tail -n 1)
  value=${value#[\"\']}
  value=${value%[\"\']}
  echo "${value:-$3}"
}
port=$(setting "$conf/messages.env" MESSAGES_PORT 5000)
cert=$(setting "$conf/messages.env" MESSAGES_CERT_FILE certs/localhost.crt)
domain=$(setting "$conf/watchdog.env" MESSAGES_WATCHDOG_DOMAIN localhost)
ca=$(setting "$conf/watchdog.env" MESSAGES_WATCHDOG_CA_FILE "$cert")
check() {
  (cd "$app" && runuser -u messages -- timeout -k 5 15 "$node" --require tsx/cjs lib/check.ts -d "$domain" -p "$port" -c "$ca") 2>&1
}
# Success only once the service passes the smoke check, against the port and certificate it uses: a start takes a
# second or two; a crash loop ends in failed (the unit's start limit) well within the 60 s.
deadline=$(($(date +%s) + 60))
until output=$(check); do
  if systemctl is-failed --quiet messages.service || [ "$(date +%s)" -ge "$deadline" ]; then
    echo "$output" | tail -n 5 >&2
    echo "install.sh: messages.service does not pass the smoke check ($(systemctl is-active messages.service)); \
its last journal lines:" >&2
    journalctl -u messages.service -n 20 --no-pager >&2
    exit 1
  fi
  sleep 1
done
# The watchdog only watches a service that has passed once: it could not mend a failed install, only restart it.
systemctl start messages-watchdog.timer
say "messages.service is $(systemctl is-active messages.service) and passes the smoke check on port $port; \
the watchdog timer is $(systemctl is-active messages-watchdog.timer)"
