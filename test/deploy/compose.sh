#!/usr/bin/env bash
# Boots docker-compose.yml, unchanged, from a fresh copy of this tree owned by an ordinary user, with podman-compose
# and with docker-compose (against podman's Docker API), and proves: the image builds from the Dockerfile on Node 24
# without an npm warning (built once, the image both tools then run); the app reports healthy through the Compose
# file's healthcheck (podman-compose builds OCI images, which drop the Dockerfile's HEALTHCHECK); every process in it
# but the init runs as daemon; a cert is generated into the host's certs/; the smoke checker passes through the
# published port (127.0.0.1 only); docker-compose waits for Redis (Valkey 8.1) to be healthy, podman-compose does not
# and the app copes; both log files appear in the host's logs/; the metrics profile's Prometheus, published on
# 127.0.0.1 only, scrapes the app (whose metrics port is not published) with the alert rules loaded and counts the
# requests sent (docker-compose starts it only with --profile metrics; podman-compose 1.0.3 knows no profiles and
# starts it unless `up` names the services); a message survives `down` and `up` (Redis volume); a killed node process
# is restarted; the cron watchdog restarts a frozen app; `down -v` removes the volumes. Then, once: docs/deploy.md's other
# Redis (MESSAGES_REDIS_IMAGE=redis:8) serves; a read-only certs/ holding a pair daemon can read serves as daemon; a
# read-only certs/ without a pair, or with a key daemon cannot read, stops the container with what to do.
source "$(dirname "$0")/common.sh"

tools=${MESSAGES_COMPOSE_TOOLS:-podman-compose docker-compose}
[[ -d $app_root/node_modules/tsx ]] || fail "run npm ci in $app_root first: the smoke checker runs from there"
bash "$deploy_dir/images.sh"

work=$(mktemp -d /tmp/messages-compose.XXXXXX)
chmod 0755 "$work" # the clone's owner (uid 1000) must reach the clone inside it
api_pid=
project=
# The one build of the run, under the names podman-compose (<project>_app) and docker-compose give their builds.
app_images=(localhost/msgdeploypc_app:latest docker.io/library/msgdeploydc_app:latest)
podman rmi "${app_images[@]}" >/dev/null 2>&1 || true
# Every build leaves image layers behind; those this run leaves untagged are removed at the end (cleanup).
podman images -aq --no-trunc | sort -u >"$work/images-before"

teardown() {
  [[ -n $project ]] || return 0
  local ids attempt
  # A container that restart: unless-stopped keeps restarting can slip between podman's kill and remove: try again.
  for attempt in 1 2 3 4 5 6; do
    mapfile -t ids < <(podman ps -aq --filter "label=com.docker.compose.project=$project")
    ((${#ids[@]} > 0)) || break
    ((attempt < 6)) || fail "could not remove the containers of $project: ${ids[*]}"
    podman rm -f "${ids[@]}" >/dev/null 2>&1 || sleep 1
  done
  podman volume rm -f "${project}_redis-data" "${project}_prometheus-data" >/dev/null 2>&1 || true
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
}
cleanup() {
  local status=$?
  set +e
  if ((status != 0)) && [[ -n $project ]]; then
    echo "-- last app log lines:"
    tail -n 20 "$clone/logs/app.log" 2>/dev/null
    for id in $(podman ps -aq --filter "label=com.docker.compose.project=$project"); do
      echo "-- podman logs $id:"
      podman logs --tail 20 "$id" 2>&1
    done
  fi
  teardown
  [[ -z $api_pid ]] || { kill "$api_pid"; wait "$api_pid"; } 2>/dev/null
  podman rmi "${app_images[@]}" >/dev/null 2>&1
  local round left
  for round in 1 2 3; do
    mapfile -t left < <(podman images -aq --no-trunc --filter dangling=true | sort -u | comm -13 "$work/images-before" -)
    ((${#left[@]} > 0)) || break
    podman rmi "${left[@]}" >/dev/null 2>&1
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# Owned by uid 1000, as an ordinary user's clone would be.
clone=$work/messages
fresh_clone "$clone"
chown -R 1000:1000 "$clone"

free_port() {
  node -e "const s = require('node:net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })"
}
port=$(free_port)
prometheus_port=$(free_port)
export MESSAGES_PUBLISH=127.0.0.1:$port MESSAGES_PROMETHEUS_PUBLISH=127.0.0.1:$prometheus_port
cert=$clone/certs/localhost.crt
url=https://localhost:$port

# Both tools take the same flags; docker-compose reaches podman through DOCKER_HOST. profile_options: --profile metrics
# while a scenario runs the metrics profile.
profile_options=()
compose() { "$tool" -p "$project" -f "$clone/docker-compose.yml" "${profile_options[@]}" "$@"; }

container() { podman ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1"; }

# There is no systemd on this host to schedule healthchecks, so a test runs them while it waits.
run_healthchecks() {
  local id
  for id in $(podman ps -q --filter "label=com.docker.compose.project=$project"); do
    podman healthcheck run "$id" >/dev/null 2>&1 || true
  done
}

# up [SERVICE...]: `compose up -d`, bounded, running healthchecks meanwhile (docker-compose waits for Redis's health).
held=
up() {
  compose up -d "$@" >"$work/up.log" 2>&1 &
  local pid=$! deadline=$((SECONDS + 300))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill "$pid"; tail -n 30 "$work/up.log"; fail "$tool up: not within 300s"; }
    # docker-compose honours `condition: service_healthy`: while Redis is not reported healthy, app must not start.
    # Seen once per run: the check holds the boot for 5 s.
    if [[ $tool == docker-compose && -z $held && -n $(container redis) ]]; then
      sleep 5
      [[ -z $(podman ps -aq --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=app") ]] ||
        fail "docker-compose started app before Redis was reported healthy"
      held=yes
      echo "ok: docker-compose holds app back until Redis reports healthy"
    fi
    run_healthchecks
    sleep 2
  done
  wait "$pid" || { tail -n 30 "$work/up.log"; fail "$tool up failed"; }
  echo "ok: $tool ${profile_options[*]}${profile_options[*]:+ }up -d${*:+ $*}"
}

healthz() { curl -sf --max-time 5 --cacert "$cert" "$url/healthz"; }
# The health the tool reports for app, after running its check once (no systemd here to schedule it).
app_healthy() {
  podman healthcheck run "$(container app)" >/dev/null 2>&1
  [[ $(podman inspect -f '{{.State.Health.Status}}' "$(container app)") == healthy ]]
}
# Every process in the app container but its init (PID 1, init: true) runs as daemon; node is among them.
runs_as_daemon() {
  local processes
  processes=$(podman top "$(container app)" pid user args | tail -n +2)
  awk '$1 != 1 && $2 != "daemon" { bad = 1 } END { exit bad }' <<<"$processes" && grep -q ' node --require' <<<"$processes" ||
    { echo "$processes"; fail "$tool: a process in the app container runs as another user than daemon, or node is missing"; }
  echo "ok: every process in the app container but its init runs as daemon: $(awk '$1 != 1 { print $3 }' <<<"$processes" | xargs -n 1 basename | tr '\n' ' ')"
}
# redis_server: what answers as redis, from its INFO (Valkey reports valkey_version beside redis_version).
redis_server() {
  podman exec "$(container redis)" redis-cli INFO server | tr -d '\r' |
    awk -F: '$1 == "redis_version" { redis = $2 } $1 == "valkey_version" { valkey = $2 }
      END { if (valkey != "") print "valkey " valkey; else print "redis " redis }'
}
# The program a host pid runs (Node 24 names its main thread MainThread, so not /proc/PID/comm).
program() { basename "$(tr '\0' '\n' <"/proc/$1/cmdline" | head -n 1)"; }
# The host pid of the app's node: the child of the container's init (init: true).
node_pid() {
  local init
  init=$(podman inspect -f '{{.State.Pid}}' "$(container app)")
  [[ $(program "$init") != node ]] || fail "$tool: node runs as the container's PID 1: init: true was ignored"
  local children
  read -r children _ <"/proc/$init/task/$init/children"
  echo "$children"
}

smoke_check() {
  local output
  output=$(cd "$app_root" && timeout 60 npm run --silent check -- -d localhost -p "$port" -c "$cert" 2>&1) ||
    { echo "$output"; fail "$tool: smoke check"; }
  [[ $output == *"All tests passed!"* ]] || { echo "$output"; fail "$tool: smoke check output"; }
  echo "ok: smoke check through 127.0.0.1:$port passed ($1)"
}

wait_serving() {
  wait_for 120 "$tool: https://localhost:$port/healthz answers 200 ($1)" healthz
  smoke_check "$1"
}

# prometheus_value QUERY: the value of an instant query to the metrics profile's Prometheus through its HTTP API.
prometheus_value() {
  curl -sf --max-time 5 "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1" |
    node -e 'const { result } = JSON.parse(require("node:fs").readFileSync(0)).data; console.log(result[0]?.value[1] ?? "")'
}
prometheus_says() { [[ $(prometheus_value "$1") == "$2" ]]; }
prometheus_absent() {
  local prometheus
  prometheus=$(podman ps -aq --filter "label=com.docker.compose.project=$project" --filter label=com.docker.compose.service=prometheus)
  [[ -z $prometheus ]] || fail "$tool: a prometheus container runs without the metrics profile"
  echo "ok: \`$tool up -d${*:+ $*}\` starts no Prometheus"
}
# The metrics profile: Prometheus on 127.0.0.1 only, the app's metrics port not published, app:9464 scraped with the
# alert rules of docs/alerts.yml loaded, and a request sent to the app counted (the app has just started).
metrics_profile() {
  local prometheus published rules expected
  prometheus=$(container prometheus)
  [[ -n $prometheus ]] || fail "$tool: no prometheus container runs"
  published=$(podman port "$prometheus")
  [[ $published == "9090/tcp -> 127.0.0.1:$prometheus_port" ]] || fail "$tool: prometheus is published as: $published"
  published=$(podman port "$(container app)")
  [[ $published == "5000/tcp -> 127.0.0.1:$port" ]] || fail "$tool: app publishes more than its HTTPS port: $published"
  echo "ok: Prometheus is published on 127.0.0.1:$prometheus_port only; app publishes only 5000, not its metrics port"
  wait_for 60 "$tool: Prometheus scrapes app:9464: up{job=\"messages\"} is 1" prometheus_says 'up{job="messages"}' 1
  rules=$(curl -sf --max-time 5 "http://127.0.0.1:$prometheus_port/api/v1/rules" |
    node -e 'const { data } = JSON.parse(require("node:fs").readFileSync(0));
      console.log(data.groups.flatMap((group) => group.rules.map((rule) => rule.name)).sort().join(" "))')
  expected=$(sed -n 's/^ *- alert: //p' "$clone/docs/alerts.yml" | sort | xargs)
  [[ -n $expected && $rules == "$expected" ]] || fail "$tool: Prometheus has the rules '$rules', not '$expected'"
  echo "ok: Prometheus has the alert rules of docs/alerts.yml loaded: $rules"
  local i
  for i in 1 2 3; do
    curl -sf --max-time 5 -o /dev/null -I --cacert "$cert" "$url/readyz" || fail "$tool: HEAD /readyz"
  done
  wait_for 60 "$tool: Prometheus counts the 3 HEAD /readyz sent to the app" \
    prometheus_says 'sum(messages_http_requests_total{route="/readyz",method="HEAD"})' 3
}

# build_once: the app image, built from the clone as docker-compose builds it, run by both tools: their `up` finds it
# under the name it would give its own build. Without the layer cache, so that npm's output shows.
build_once() {
  step "build the app image"
  local image=${app_images[0]}
  timeout 300 podman build --pull=never --no-cache --format docker -t "$image" "$clone" >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log"; fail "podman build"; }
  grep -Eq 'added [0-9]+ packages' "$work/build.log" || { cat "$work/build.log"; fail "no npm ci in the build output"; }
  ! grep -i 'npm warn' "$work/build.log" || fail "the image build printed an npm warning"
  podman tag "$image" "${app_images[@]:1}"
  echo "ok: the image builds on $(podman run --rm --user daemon --entrypoint node "$image" --version) without an npm warning"
}

scenario() {
  step "$tool, project $project"
  teardown
  # podman-compose 1.0.3 (Debian 12) knows no profiles: it starts every service unless `up` names some.
  local profiles= help
  help=$("$tool" --help 2>&1 || true)
  [[ $help != *--profile* ]] || profiles=yes
  up
  wait_for 60 "$tool: certificate generated on the host in certs/" test -s "$cert"
  wait_serving "first start"
  if [[ -n $profiles ]]; then prometheus_absent; else metrics_profile; fi

  local app
  app=$(container app)
  # The Compose file's check (CMD-SHELL), not the image's HEALTHCHECK (exec form), which OCI builds drop.
  [[ $(podman inspect -f '{{.Config.Healthcheck.Test}}' "$app") == "[CMD-SHELL "*messages-healthcheck*"]" ]] ||
    fail "$tool: app's healthcheck is not the Compose file's: $(podman inspect -f '{{.Config.Healthcheck.Test}}' "$app")"
  wait_for 60 "$tool: app reports healthy through the Compose file's healthcheck" app_healthy
  runs_as_daemon
  [[ $(redis_server) == "valkey 8.1."* ]] || fail "$tool: the bundled Redis is $(redis_server), not Valkey 8.1"
  echo "ok: the bundled Redis is $(redis_server)"
  [[ $(stat -c %u "$clone/certs") == 1000 && $(stat -c %u "$clone/logs") == 1000 ]] ||
    fail "$tool: certs/ or logs/ changed owner"
  echo "ok: certs/ and logs/ still belong to the clone's owner: $(stat -c '%U:%G %A' "$clone/logs")"
  setpriv --reuid=1000 --regid=1000 --clear-groups curl -sf --max-time 5 --cacert "$cert" "$url/healthz" >/dev/null ||
    fail "$tool: the clone's owner cannot use certs/localhost.crt with curl --cacert"
  echo "ok: the clone's owner (uid 1000) reaches the service with curl --cacert certs/localhost.crt"

  local message digest
  message="kept across down and up by $tool at $(date +%s%N)"
  digest=$(curl -sf --max-time 10 --cacert "$cert" -H 'Content-Type: application/json' \
    --data "{\"message\": \"$message\"}" "$url/messages" | node -p 'JSON.parse(require("node:fs").readFileSync(0)).digest')
  [[ $digest == "$(printf '%s' "$message" | sha256sum | cut -d' ' -f1)" ]] || fail "$tool: POST gave digest '$digest'"
  echo "ok: POST /messages -> $digest"

  wait_for 10 "$tool: app.log and access.log on the host" \
    grep -q "POST /messages" "$clone/logs/access.log"
  [[ -s $clone/logs/app.log ]] || fail "$tool: logs/app.log is empty"
  ls -l "$clone/logs" | sed 's/^/   /'

  compose down >"$work/down.log" 2>&1 || { cat "$work/down.log"; fail "$tool down"; }
  [[ -z $(podman ps -aq --filter "label=com.docker.compose.project=$project") ]] || fail "$tool down left containers"
  echo "ok: $tool down"
  if [[ -n $profiles ]]; then
    profile_options=(--profile metrics)
    up
  else
    up app
  fi
  wait_serving "after down and up"
  if [[ -n $profiles ]]; then metrics_profile; else prometheus_absent app; fi
  app=$(container app)
  local body
  body=$(curl -sf --max-time 10 --cacert "$cert" "$url/messages/$digest")
  [[ $(node -p 'JSON.parse(require("node:fs").readFileSync(0)).message' <<<"$body") == "$message" ]] ||
    fail "$tool: after down/up GET gave $body"
  echo "ok: the message is still there after down and up (Redis append-only file in the named volume)"

  local old_pid
  old_pid=$(node_pid)
  [[ $(program "$old_pid") == node ]] || fail "$tool: pid $old_pid is $(program "$old_pid"), not node"
  kill -KILL "$old_pid"
  echo "killed node (host pid $old_pid) with SIGKILL"
  wait_for 60 "$tool: container restarted by restart: unless-stopped" \
    bash -c "[[ \$(podman inspect -f '{{.RestartCount}}' $app) -ge 1 ]]"
  wait_serving "after the kill"

  # The cron flavour of the watchdog, as docs/deploy.md ("Watchdog from cron") sets it up, with this tool as the restart command.
  local notified=$work/notified-$tool
  export MESSAGES_PORT=$port MESSAGES_WATCHDOG_NOTIFY="cat > $notified"
  export MESSAGES_WATCHDOG_RESTART="$tool -p $project -f $clone/docker-compose.yml restart app"
  "$clone/systemd/watchdog.sh" >"$work/watchdog.log" 2>&1 ||
    { cat "$work/watchdog.log"; fail "$tool: watchdog failed against a healthy app"; }
  [[ ! -s $work/watchdog.log && ! -e $notified ]] || fail "$tool: watchdog spoke while the app was healthy"
  echo "ok: watchdog.sh is silent and exits 0 while the app is healthy"
  old_pid=$(node_pid)
  kill -STOP "$old_pid"
  echo "froze node (host pid $old_pid) with SIGSTOP"
  if MESSAGES_WATCHDOG_TIMEOUT=5 "$clone/systemd/watchdog.sh" >"$work/watchdog.log" 2>&1; then
    fail "$tool: watchdog exited 0 against a frozen app"
  fi
  sed 's/^/   /' "$work/watchdog.log"
  grep -Eq "smoke check (failed|gave no answer).*; restarting with: $tool" "$work/watchdog.log" ||
    fail "$tool: watchdog did not say why"
  grep -Eq "smoke check (failed|gave no answer)" "$notified" || fail "$tool: the notify command did not get the reason"
  wait_serving "after the watchdog's restart"
  [[ $(node_pid) != "$old_pid" ]] || fail "$tool: node was not restarted"

  compose down -v >"$work/down.log" 2>&1 || { cat "$work/down.log"; fail "$tool down -v"; }
  ! podman volume exists "${project}_redis-data" || fail "$tool: down -v left the Redis volume"
  ! podman volume exists "${project}_prometheus-data" || fail "$tool: down -v left the Prometheus volume"
  echo "ok: $tool down -v removed the volumes"
  profile_options=()
  teardown
  # Back to a fresh clone for the next tool.
  rm -f "$clone"/certs/localhost.* "$clone"/logs/*.log*
  chown 1000:1000 "$clone/certs" "$clone/logs"
  chmod 0755 "$clone/certs" "$clone/logs"
}

# app_says TEXT: the app container's output (it may have exited) holds TEXT.
app_says() {
  local id
  id=$(podman ps -aq --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=app")
  [[ -n $id ]] && podman logs "$id" 2>&1 | grep -qF "$1"
}

# refused WHY TEXT: `up` with the certs/ of this moment; the entrypoint stops the container saying TEXT, node never ran.
refused() {
  up
  wait_for 60 "$tool: $1: the container stops, saying: $2" app_says "entrypoint: $2"
  [[ ! -e $clone/logs/app.log ]] || fail "$tool: $1: node ran (logs/app.log exists)"
  echo "ok: node never started (no logs/app.log)"
  # Not `down`: restart: unless-stopped keeps starting the container, which races the tool's stop and remove.
  teardown
}

# Once, with the last tool: docs/deploy.md's other Redis, then certs/ mounted read-only as its "Replace the certificate"
# suggests for an operator's own pair.
once() {
  step "$tool: MESSAGES_REDIS_IMAGE=redis:8"
  export MESSAGES_REDIS_IMAGE=redis:8
  up
  wait_serving "with MESSAGES_REDIS_IMAGE=redis:8"
  [[ $(redis_server) == "redis 8.0."* ]] || fail "$tool: MESSAGES_REDIS_IMAGE=redis:8 runs $(redis_server)"
  echo "ok: the bundled Redis is now $(redis_server)"
  compose down -v >"$work/down.log" 2>&1 || { cat "$work/down.log"; fail "$tool down -v"; }
  teardown
  unset MESSAGES_REDIS_IMAGE
  rm -f "$clone"/certs/localhost.* "$clone"/logs/*.log*

  step "$tool: certs/ mounted read-only"
  sed -i 's|- ./certs:/opt/messages/certs$|- ./certs:/opt/messages/certs:ro|' "$clone/docker-compose.yml"
  grep -q -- '- ./certs:/opt/messages/certs:ro$' "$clone/docker-compose.yml" || fail "could not make certs/ read-only"
  chown 1000:1000 "$clone/certs"
  chmod 0755 "$clone/certs"
  local pair=("$clone/certs/localhost.crt" "$clone/certs/localhost.key") before
  (cd "$app_root" && MESSAGES_CERT_FILE=${pair[0]} MESSAGES_KEY_FILE=${pair[1]} node --require tsx/cjs lib/certs.ts) >/dev/null
  chown 1000:1000 "${pair[@]}"
  chown 1 "${pair[1]}" # docs/deploy.md: make the key readable by uid 1
  before=$(stat -c '%u:%g %a' "$clone/certs")
  up
  wait_serving "certs/ read-only, holding a pair daemon can read"
  runs_as_daemon
  [[ $(stat -c '%u:%g %a' "$clone/certs") == "$before" ]] || fail "$tool: certs/ changed: $before -> $(stat -c '%u:%g %a' "$clone/certs")"
  ! app_says 'entrypoint:' || fail "$tool: the entrypoint complained about a valid setup"
  echo "ok: certs/ untouched ($before); logs/ on the host: $(ls "$clone/logs" | tr '\n' ' ')"
  compose down -v >"$work/down.log" 2>&1 || { cat "$work/down.log"; fail "$tool down -v"; }
  teardown
  rm -f "$clone"/logs/*.log*

  chown 1000 "${pair[1]}"
  refused "a read-only certs/ with a key daemon cannot read" \
    "certs/localhost.key is not readable by daemon (uid 1), the service's user."
  rm -f "${pair[@]}"
  refused "a read-only certs/ without a pair" \
    "/opt/messages/certs holds no certificate and key (certs/localhost.crt, certs/localhost.key) and daemon (uid 1) cannot"
  sed -i 's|- ./certs:/opt/messages/certs:ro$|- ./certs:/opt/messages/certs|' "$clone/docker-compose.yml"
}

build_once
for tool in $tools; do
  case $tool in
    podman-compose)
      project=msgdeploypc
      ;;
    docker-compose)
      project=msgdeploydc
      if [[ -z $api_pid ]]; then
        podman system service --time=0 "unix://$work/podman.sock" &
        api_pid=$!
        export DOCKER_HOST=unix://$work/podman.sock COMPOSE_DOCKER_CLI_BUILD=0 DOCKER_BUILDKIT=0
        wait_for 30 "podman's Docker API on $work/podman.sock" curl -sf --unix-socket "$work/podman.sock" http://d/_ping
      fi
      ;;
    *) fail "unknown compose tool: $tool" ;;
  esac
  scenario
done
once
echo "compose: all checks passed (${tools// /, })"
