#!/usr/bin/env bash
# Boots two stand-in VMs in containers, systemd as PID 1: Debian 12 with its redis-server (7.0), its nodejs (18) at
# /usr/bin/node and an upstream Node 24 in /usr/local; Debian 13 with its valkey-server (8.1) and its own nodejs
# (20.19) and npm. On each it installs a fresh copy of this tree with systemd/install.sh and proves: install.sh refuses
# a node older than engines (Debian 12's 18), saying what to install; `systemd-analyze verify` is silent and the
# security score is <= 1.0; the service is active, sandboxed, passes the smoke check and serves GET /metrics on
# 127.0.0.1:9464; install.sh is idempotent; kill -9 of the main PID is restarted; `systemctl reload` swaps the cert
# without a restart; logrotate with systemd/messages.logrotate moves the logs aside and the same process writes new
# ones; a service that cannot start makes install.sh exit 1 with its journal lines, and its crash loop ends in failed;
# a frozen (SIGSTOP) service is restarted by the watchdog timer within two minutes, with the reason in the journal;
# --uninstall removes it all.
source "$(dirname "$0")/common.sh"

bash "$deploy_dir/images.sh"

vm=
work=$(mktemp -d /tmp/messages-systemd.XXXXXX)
cleanup() {
  local status=$?
  set +e
  if ((status != 0)) && [[ -n $vm ]]; then
    echo "-- journal of the VM (messages units):"
    podman exec "$vm" journalctl --no-pager -n 40 -u messages.service -u messages-watchdog.service 2>&1
    podman exec "$vm" systemctl list-timers --no-pager messages-watchdog.timer 2>&1
    echo "-- last app log lines:"
    podman exec "$vm" tail -n 10 /opt/messages/logs/app.log 2>&1
  fi
  [[ -z $vm ]] || podman rm -f -t 0 "$vm" >/dev/null 2>&1
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
fresh_clone "$work/messages"

in_vm() { podman exec "$vm" "$@"; }
main_pid() { in_vm systemctl show -p MainPID --value messages.service; }
smoke_check() { in_vm sh -c "cd /opt/messages && timeout 30 node --require tsx/cjs lib/check.ts -d localhost -p 5000 -c certs/localhost.crt"; }
check_passes() {
  local output
  output=$(smoke_check 2>&1) || { echo "$output"; fail "$vm: smoke check ($1)"; }
  [[ $output == *"All tests passed!"* ]] || { echo "$output"; fail "$vm: smoke check output ($1)"; }
  echo "ok: smoke check passed ($1)"
}
restarted_since() { [[ $(in_vm systemctl is-active messages.service) == active && $(main_pid) != "$1" && $(main_pid) != 0 ]]; }
system_up() { [[ $(in_vm systemctl is-system-running) =~ ^(running|degraded)$ ]]; }

# boot NAME IMAGE REDIS_UNIT: the whole sequence on one stand-in VM.
boot() {
  vm=msgdeploy-systemd-$1
  local image=$2 redis_unit=$3 output started pid exe
  step "$1: boot the VM"
  podman rm -f -t 0 "$vm" >/dev/null 2>&1 || true
  podman run -d --name "$vm" --systemd=always --privileged "$image" >/dev/null
  wait_for 60 "systemd is up in the VM" system_up
  wait_for 30 "Debian's $redis_unit is active" in_vm systemctl is-active "$redis_unit"
  podman cp "$work/messages" "$vm:/root/messages"
  # docs/deploy.md's steps: Debian's Redis keeps only snapshots until appendonly is on; turned on live first, a key
  # written (and snapshotted) before survives a restart.
  cli() { in_vm sh -c "redis-cli $* 2>/dev/null || valkey-cli $*"; }
  cli set messages:deploy-probe before >/dev/null
  cli save >/dev/null
  cli config set appendonly yes >/dev/null
  aof_written() { ! cli info persistence | grep -Eq '^aof_rewrite_(in_progress|scheduled):1'; }
  wait_for 30 "the append-only file written from the data in memory" aof_written
  in_vm sh -c 'for conf in /etc/redis/redis.conf /etc/valkey/valkey.conf; do
    [ ! -f "$conf" ] || sed -i "s/^appendonly no/appendonly yes/" "$conf"; done'
  in_vm systemctl restart "$redis_unit"
  wait_for 30 "Debian's $redis_unit is active again" in_vm systemctl is-active "$redis_unit"
  [[ $(cli config get appendonly | tail -n 1) == yes ]] || fail "appendonly is not on after docs/deploy.md's steps"
  [[ $(cli get messages:deploy-probe) == before ]] || fail "a key written before appendonly was turned on is gone"
  cli del messages:deploy-probe >/dev/null
  echo "ok: appendonly yes as docs/deploy.md turns it on, and the data from before kept"
  echo "ok: $(in_vm sh -c '. /etc/os-release && echo "$PRETTY_NAME"'), $(in_vm sh -c 'redis-server --version 2>/dev/null || valkey-server --version' | cut -d' ' -f1-3)"

  # Debian 12's own nodejs is 18: with nothing newer in /usr/local, install.sh must stop before changing anything.
  if [[ $(in_vm /usr/bin/node --version) == v18.* ]]; then
    step "$1: a node older than engines"
    in_vm mv /usr/local/bin/node /usr/local/bin/node.aside
    if output=$(in_vm /root/messages/systemd/install.sh 2>&1); then
      fail "install.sh accepted $(in_vm /usr/bin/node --version)"
    fi
    echo "$output" | sed 's/^/   /'
    [[ $output == *"/usr/bin/node is v18."*"older than this service supports (package.json engines: "* &&
      $output == *"install Node.js 24 LTS"* ]] || fail "install.sh did not say why and what to install"
    ! in_vm getent passwd messages >/dev/null && ! in_vm test -e /opt/messages || fail "install.sh changed the VM"
    in_vm mv /usr/local/bin/node.aside /usr/local/bin/node
    echo "ok: install.sh refuses Debian 12's node 18, says what to install, and changes nothing"
  fi

  step "$1: install"
  in_vm /root/messages/systemd/install.sh
  [[ $(in_vm systemctl is-active messages.service) == active ]] || fail "messages.service is not active"
  [[ $(in_vm systemctl is-enabled messages.service messages-watchdog.timer | sort -u) == enabled ]] || fail "units not enabled"
  echo "ok: messages.service active, messages.service and messages-watchdog.timer enabled"
  # The watchdog step below starts the timer again; until then only the test restarts the service.
  in_vm systemctl stop messages-watchdog.timer
  wait_for 30 "the service answers" smoke_check
  check_passes "after install"
  pid=$(main_pid)
  user=$(in_vm ps -o user= -p "$pid" | tr -d ' ')
  [[ $user == messages ]] || fail "node runs as $user"
  exe=$(in_vm readlink "/proc/$pid/exe")
  echo "ok: the service runs $exe, $(in_vm "$exe" --version)"
  in_vm grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" || fail "NoNewPrivileges is not in force"
  in_vm grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status" || fail "the system call filter is not in force"
  in_vm grep -q '^CapEff:[[:space:]]*0*$' "/proc/$pid/status" || fail "the service holds capabilities"
  echo "ok: node (pid $pid) runs as messages, no new privileges, seccomp filter on, no capabilities"
  in_vm test -s /opt/messages/logs/app.log || fail "no logs/app.log"
  in_vm test -s /opt/messages/logs/access.log || fail "no logs/access.log"
  echo "ok: logs in /opt/messages/logs: $(in_vm ls /opt/messages/logs | tr '\n' ' ')"
  # Where docs point a Prometheus on the same host: the sandbox lets it in.
  build_info=$(in_vm node -e "require('node:http').get('http://127.0.0.1:9464/metrics', (res) => {
    let body = ''; res.on('data', (chunk) => { body += chunk; });
    res.on('end', () => { console.log(body.split('\n').find((line) => line.startsWith('messages_build_info{')) ?? '');
      process.exit(res.statusCode === 200 ? 0 : 1); }); }).on('error', () => process.exit(1))") ||
    fail "GET http://127.0.0.1:9464/metrics failed"
  [[ $build_info == 'messages_build_info{'* ]] || fail "no messages_build_info in the metrics"
  echo "ok: GET http://127.0.0.1:9464/metrics answers: $build_info"

  step "$1: systemd-analyze"
  verify=$(in_vm sh -c 'cd /etc/systemd/system && systemd-analyze verify messages.service messages-watchdog.service messages-watchdog.timer 2>&1')
  [[ -z $verify ]] || { echo "$verify"; fail "systemd-analyze verify printed something"; }
  echo "ok: systemd-analyze verify prints nothing for the three units"
  score=$(in_vm systemd-analyze security --offline=yes --threshold=10 /etc/systemd/system/messages.service 2>&1) ||
    { echo "$score"; fail "security exposure above 1.0"; }
  echo "ok: $(tail -n 1 <<<"$score" | sed 's/^→ //')"

  step "$1: install again"
  fingerprint() { in_vm openssl x509 -noout -fingerprint -sha256 -in /opt/messages/certs/localhost.crt; }
  before=$(fingerprint)
  in_vm /root/messages/systemd/install.sh >/dev/null
  # The watchdog step below starts the timer again. Until then a check, even one the timer already started, would see
  # the deliberate outages of the next steps (kill -9, a certificate swapped under it) and restart the service.
  in_vm systemctl stop messages-watchdog.timer messages-watchdog.service
  [[ $(fingerprint) == "$before" ]] || fail "a second install replaced the certificate"
  wait_for 30 "the service answers after the second install" smoke_check
  check_passes "after a second install.sh run, same certificate"

  step "$1: kill -9"
  pid=$(main_pid)
  in_vm kill -KILL "$pid"
  wait_for 30 "Restart=always started a new main process after kill -9 of $pid" restarted_since "$pid"
  wait_for 30 "the service answers" smoke_check
  check_passes "after kill -9"
  # A stray SIGTERM (not systemctl stop): the service drains and exits 0, which Restart=on-failure left stopped.
  pid=$(main_pid)
  in_vm kill -TERM "$pid"
  wait_for 30 "Restart=always started a new main process after a stray SIGTERM to $pid" restarted_since "$pid"
  wait_for 30 "the service answers" smoke_check
  check_passes "after a stray SIGTERM"

  step "$1: systemctl reload"
  pid=$(main_pid)
  since=$(in_vm systemctl show -p ActiveEnterTimestampMonotonic --value messages.service)
  in_vm sh -c 'cd /opt/messages/certs && mv localhost.crt previous.crt && mv localhost.key previous.key'
  in_vm sh -c 'cd /opt/messages && runuser -u messages -- node --require tsx/cjs lib/certs.ts' >/dev/null
  ! smoke_check >/dev/null 2>&1 || fail "the new certificate verified before the reload"
  echo "ok: before the reload the service still presents the previous certificate"
  in_vm systemctl reload messages.service
  wait_for 15 "after systemctl reload the new certificate verifies" smoke_check
  [[ $(main_pid) == "$pid" ]] || fail "reload replaced the main process"
  [[ $(in_vm systemctl show -p ActiveEnterTimestampMonotonic --value messages.service) == "$since" ]] ||
    fail "reload took the service down"
  in_vm rm /opt/messages/certs/previous.crt /opt/messages/certs/previous.key
  check_passes "after reload, same main PID $pid, never inactive"

  step "$1: logrotate"
  in_vm sh -c 'echo MESSAGES_LOG_MAX_BYTES=0 >>/etc/messages/messages.env'
  in_vm systemctl restart messages.service
  wait_for 30 "the service answers with its own rotation off" smoke_check
  in_vm install -m 0644 /root/messages/systemd/messages.logrotate /etc/logrotate.d/messages
  pid=$(main_pid)
  in_vm logrotate -f /etc/logrotate.d/messages
  in_vm test -s /opt/messages/logs/access.log.1 || fail "logrotate did not rotate access.log"
  check_passes "after logrotate"
  in_vm grep -q 'GET /messages/' /opt/messages/logs/access.log || fail "the service did not reopen access.log"
  [[ $(main_pid) == "$pid" ]] || fail "logrotate restarted the service"
  echo "ok: logrotate moved the logs aside and its reload made the same process (pid $pid) write to new ones:"
  in_vm ls /opt/messages/logs | sed 's/^/   /'

  step "$1: a service that cannot start"
  in_vm sh -c 'echo MESSAGES_CERT_FILE=/nonexistent.crt >>/etc/messages/messages.env'
  started=$SECONDS
  if output=$(in_vm /root/messages/systemd/install.sh 2>&1); then
    echo "$output"
    fail "install.sh reported success for a service that cannot start"
  fi
  echo "$output" | grep -v '^install.sh: \(installed\|created\|wrote\)' | tail -n 12 | sed 's/^/   /'
  [[ $output == *"messages.service does not pass the smoke check"* ]] || fail "install.sh did not say the check failed"
  [[ $output == *'The file named by "MESSAGES_CERT_FILE" does not exist'* ]] ||
    fail "install.sh did not print the journal line that says why"
  [[ $(in_vm systemctl is-active messages-watchdog.timer) != active ]] || fail "install.sh started the watchdog timer"
  echo "ok: install.sh exits 1 after $((SECONDS - started))s with the service's last journal lines, timer not started"
  wait_for 60 "the crash loop ends in failed" in_vm systemctl is-failed --quiet messages.service
  in_vm journalctl -u messages.service --no-pager -o cat | grep -q 'Start request repeated too quickly' ||
    fail "messages.service failed, but not by its start limit"
  in_vm systemctl --failed --no-legend --plain | grep -q '^messages.service ' || fail "systemctl --failed does not list it"
  echo "ok: after $(in_vm systemctl show -p NRestarts --value messages.service) restarts the start limit stopped the \
loop: messages.service is failed, and systemctl --failed lists it"
  in_vm sed -i '/^MESSAGES_CERT_FILE=\/nonexistent.crt$/d' /etc/messages/messages.env
  in_vm /root/messages/systemd/install.sh >/dev/null
  in_vm systemctl stop messages-watchdog.timer messages-watchdog.service
  check_passes "after fixing the setting, install.sh starts it again"

  step "$1: watchdog"
  # The test shortens the period with a drop-in and the checker's timeout; the notify command writes a file.
  in_vm mkdir -p /etc/systemd/system/messages-watchdog.timer.d
  in_vm sh -c 'printf "[Timer]\nOnCalendar=\nOnCalendar=*:*:0/10\n" > /etc/systemd/system/messages-watchdog.timer.d/test.conf'
  in_vm sh -c 'printf "MESSAGES_WATCHDOG_TIMEOUT=10\nMESSAGES_WATCHDOG_NOTIFY=cat > /run/messages-watchdog.notified\n" > /etc/messages/watchdog.env'
  in_vm systemctl daemon-reload
  # A run the test stopped earlier (install.sh starts the timer) left its own result: wait for one after this point.
  local last_run
  last_run=$(in_vm systemctl show -p ExecMainExitTimestampMonotonic --value messages-watchdog.service)
  in_vm systemctl start messages-watchdog.timer
  watchdog_ran() {
    [[ $(in_vm systemctl show -p ExecMainExitTimestampMonotonic --value messages-watchdog.service) != "$last_run" &&
      $(in_vm systemctl show -p ActiveState --value messages-watchdog.service) != activating ]]
  }
  wait_for 40 "the timer ran the watchdog" watchdog_ran
  [[ $(in_vm systemctl show -p Result --value messages-watchdog.service) == success ]] || fail "the watchdog failed on a healthy service"
  echo "ok: the watchdog passes against the healthy service"
  pid=$(main_pid)
  in_vm kill -STOP "$pid"
  frozen_at=$SECONDS
  echo "froze node (pid $pid) with SIGSTOP"
  wait_for 120 "the watchdog timer restarted the frozen service" restarted_since "$pid"
  echo "ok: restarted $((SECONDS - frozen_at))s after the freeze"
  in_vm journalctl --no-pager -o short-precise -u messages-watchdog.service | grep 'messages-watchdog:' | sed 's/^/   /'
  in_vm journalctl --no-pager -o cat -u messages-watchdog.service |
    grep -Eq 'smoke check (failed|gave no answer).*; restarting with: systemctl restart messages.service' ||
    fail "the journal does not say why"
  in_vm grep -Eq 'smoke check (failed|gave no answer)' /run/messages-watchdog.notified ||
    fail "the notify command did not get the reason"
  echo "ok: the journal and the notify command say why"
  wait_for 30 "the service answers" smoke_check
  check_passes "after the watchdog's restart"
  # Regression: the watchdog started a service stopped on purpose again within a minute.
  in_vm systemctl stop messages.service
  # Its condition fails, so ExecStart never runs: the timer's last trigger tells that it was started.
  local triggered
  triggered=$(in_vm systemctl show -p LastTriggerUSecMonotonic --value messages-watchdog.timer)
  timer_fired() { [[ $(in_vm systemctl show -p LastTriggerUSecMonotonic --value messages-watchdog.timer) != "$triggered" ]]; }
  wait_for 40 "the timer started the watchdog" timer_fired
  sleep 5
  [[ $(in_vm systemctl is-active messages.service) == inactive ]] || fail "the watchdog started a service stopped on purpose"
  echo "ok: a service stopped with systemctl stop stays stopped"
  in_vm systemctl start messages.service
  wait_for 30 "the service answers" smoke_check

  step "$1: uninstall"
  in_vm /root/messages/systemd/install.sh --uninstall
  ! in_vm systemctl cat messages.service >/dev/null 2>&1 || fail "messages.service is still known"
  ! in_vm test -e /opt/messages || fail "/opt/messages is still there"
  ! in_vm getent passwd messages >/dev/null || fail "the messages user is still there"
  listening() { in_vm node -e "require('node:net').connect(5000, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))"; }
  ! listening || fail "something still listens on port 5000"
  echo "ok: units, /opt/messages, /etc/messages and the user are gone; nothing listens on 5000"
  podman rm -f -t 0 "$vm" >/dev/null
  vm=
  echo "ok: $1: all checks passed"
}

# run.sh boots each VM in a process of its own, side by side; alone, this script boots both in turn.
case ${1:-both} in
  debian12) boot debian12 "$vm12_image" redis-server.service ;;
  debian13) boot debian13 "$vm13_image" valkey-server.service ;;
  both)
    boot debian12 "$vm12_image" redis-server.service
    boot debian13 "$vm13_image" valkey-server.service
    ;;
  *) fail "usage: $0 [debian12|debian13]" ;;
esac
echo "systemd: all checks passed (${1:-Debian 12 with Redis 7.0, Debian 13 with Valkey 8.1})"
