#!/bin/sh
# Runs the smoke checker against the live service; when it fails or hangs twice in a row, restarts the service and
# tells someone.
# Used by messages-watchdog.service (systemd) and by a crontab line on a Compose host (docs/deploy.md, "Compose").
# Settings, from the environment (all optional):
#   MESSAGES_WATCHDOG_RESTART  command that restarts the service [docker compose restart app]
#   MESSAGES_WATCHDOG_NOTIFY   command run after a restart, with the reason and the checker's output on its stdin
#   MESSAGES_WATCHDOG_TIMEOUT  seconds the checker may take [30]
#   MESSAGES_WATCHDOG_DOMAIN   name to connect to and to verify the certificate against [localhost]
#   MESSAGES_WATCHDOG_CA_FILE  CA certificates the certificate must verify against [MESSAGES_CERT_FILE, right for the
#                              self-signed default; a CA-issued one needs its CA: /etc/ssl/certs/ca-certificates.crt]
#   MESSAGES_WATCHDOG_UNIT     the systemd unit of the service [unset]: one stopped on purpose (neither active nor
#                              failed) is left alone, also when it was stopped during a run's checks
#   MESSAGES_PORT, MESSAGES_CERT_FILE  as for the service [5000, certs/localhost.crt]
set -u
# cron's PATH is /usr/bin:/bin, without /usr/local/bin, where a node from nodejs.org goes: the standard directories
# missing are put first, as in systemd's search path; the caller's own keep their order.
for dir in /bin /usr/bin /usr/local/bin; do
  case :${PATH:-}: in *:"$dir":*) ;; *) PATH=$dir${PATH:+:$PATH} ;; esac
done
export PATH

# The app root is this script's parent directory: a clone, or /opt/messages; relative paths resolve against it.
cd "$(dirname "$0")/.." || exit 1

restart=${MESSAGES_WATCHDOG_RESTART:-docker compose restart app}
notify=${MESSAGES_WATCHDOG_NOTIFY:-}
timeout=${MESSAGES_WATCHDOG_TIMEOUT:-30}
set -- -d "${MESSAGES_WATCHDOG_DOMAIN:-localhost}" -p "${MESSAGES_PORT:-5000}" \
  -c "${MESSAGES_WATCHDOG_CA_FILE:-${MESSAGES_CERT_FILE:-certs/localhost.crt}}"

# The node checker where the app's dependencies are installed, else the stdlib-only Python one (same flags).
if [ -d node_modules/tsx ]; then
  set -- node --require tsx/cjs lib/check.ts "$@"
else
  set -- python3 test/test.py "$@"
fi

unit=${MESSAGES_WATCHDOG_UNIT:-}
stopped() { [ -n "$unit" ] && ! systemctl is-active --quiet "$unit" && ! systemctl is-failed --quiet "$unit"; }
stopped && exit 0

# -k: a checker that ignores SIGTERM is killed 5 s later.
check() { output=$(timeout -k 5 "$timeout" "$@" 2>&1); }

check "$@" && exit 0
# One failure may be a start or restart in progress: act only when a second check, 10 s later, fails too.
sleep 10
check "$@" && exit 0
status=$?
last=$(printf '%s\n' "$output" | tail -n 1)

# The service's own 503 (its JSON, not a proxy's page) is Redis unavailable, which it recovers from by itself.
case $last in
  *', received 503 {"err_msg":"'*', retry later"}')
    echo "messages-watchdog: the service answers 503, Redis unavailable (it reconnects by itself); not restarting: $last"
    exit 1 ;;
esac
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  reason="smoke check gave no answer within ${timeout}s"
else
  reason="smoke check failed (exit $status): $last"
fi
# A stop during the checks (10 s and more when they fail) is a stop on purpose too.
if stopped; then
  echo "messages-watchdog: $reason; $unit was stopped meanwhile: left stopped"
  exit 0
fi
echo "messages-watchdog: $reason; restarting with: $restart"
if sh -c "$restart"; then
  echo "messages-watchdog: restart command succeeded"
else
  echo "messages-watchdog: restart command failed (exit $?)"
fi
if [ -n "$notify" ]; then
  printf 'messages-watchdog on %s: %s\n\n%s\n' "$(uname -n)" "$reason" "$output" | sh -c "$notify" ||
    echo "messages-watchdog: notify command failed (exit $?)"
fi
exit 1
