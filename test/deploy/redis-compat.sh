#!/usr/bin/env bash
# Runs the project's own Redis-facing tests against Debian 13's servers, in a Debian 13 container with Node 24:
# test/api.test.ts (the API contract), test/redis-outage.test.ts (an outage and the recovery) and test/sentinel.test.ts
# (Sentinel failovers, with MIN_REPLICAS=1 among them), once against Redis 8.0 (redis-server) and once against
# Valkey 8.1 (valkey-server, under the redis-* names the tests start). `npm test` covers the machine's Redis 7.0.
source "$(dirname "$0")/common.sh"

[[ -d $app_root/node_modules/tsx ]] || fail "run npm ci in $app_root first: the tests run with its node_modules"
bash "$deploy_dir/images.sh"

tests=(test/api.test.ts test/redis-outage.test.ts test/sentinel.test.ts)
work=$(mktemp -d /tmp/messages-compat.XXXXXX)
container=
cleanup() {
  local status=$?
  set +e
  [[ -z $container ]] || podman rm -f -t 0 "$container" >/dev/null 2>&1
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
fresh_clone "$work/messages"

# run_tests NAME SERVER_BIN CLI_BIN VERSION_PATTERN: the tests with SERVER_BIN and CLI_BIN as redis-server and redis-cli.
run_tests() {
  local name=$1 server=$2 cli=$3 pattern=$4
  step "$name"
  container=msgdeploy-compat-$name
  podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
  # No network but loopback: the tests use nothing else. The host's node_modules (pure JavaScript and esbuild's
  # linux-x64 binary) serve the Debian 13 container as they are.
  if ! podman run --name "$container" --network none \
    -v "$work/messages:/src" -v "$app_root/node_modules:/src/node_modules:ro" -w /src "$compat_image" \
    sh -c 'mkdir -p /tmp/bin && ln -s "$1" /tmp/bin/redis-server && ln -s "$2" /tmp/bin/redis-cli &&
      export PATH=/tmp/bin:$PATH && echo "node $(node --version), $(redis-server --version)" && shift 2 &&
      exec node --require tsx/cjs --test --test-concurrency=1 --test-reporter=spec "$@"' \
    sh "$server" "$cli" "${tests[@]}" >"$work/$name.log" 2>&1; then
    grep -E '^(node v|\s*✖|ℹ (tests|pass|fail))' "$work/$name.log" | head -n 40 || true
    echo "-- last lines:"
    tail -n 30 "$work/$name.log"
    fail "$name: the Redis-facing tests failed"
  fi
  podman rm -f -t 0 "$container" >/dev/null
  container=
  head -n 1 "$work/$name.log" | grep -Eq "$pattern" || { head -n 1 "$work/$name.log"; fail "$name: not the server expected"; }
  head -n 1 "$work/$name.log" | sed 's/^/   /'
  grep -E '^ℹ (tests|pass|fail) ' "$work/$name.log" | sed 's/^/   /'
  grep -Eq '^\s*✔ .*MIN_REPLICAS=1' "$work/$name.log" || fail "$name: the MIN_REPLICAS=1 failover test did not run"
  echo "ok: ${tests[*]} pass against $name"
}

run_tests redis-8.0 /usr/bin/redis-server /usr/bin/redis-cli 'Redis server v=8\.0\.'
run_tests valkey-8.1 /usr/bin/valkey-server /usr/bin/valkey-cli 'Valkey server v=8\.1\.'
echo "redis-compat: all checks passed"
