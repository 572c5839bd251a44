#!/usr/bin/env bash
# The deploy suite: installs the Debian packages it needs when missing, builds the stand-in images once, then boots
# the Compose path and the systemd path for real, and runs the Redis-facing tests against Debian 13's Redis 8.0 and
# Valkey 8.1. Run as root from anywhere: bash test/deploy/run.sh
# About 4 minutes once the images exist; a first run on a new machine adds about 5 (packages, debootstrap).
set -uo pipefail
deploy_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
app_root=$(cd "$deploy_dir/../.." && pwd)

[[ $(id -u) == 0 ]] || { echo "deploy: run as root (podman, debootstrap and chroot need it)" >&2; exit 1; }

# runc: crun refuses this machine's hybrid cgroups; catatonit: the init of `init: true`; curl: the tests' client.
packages=(podman buildah netavark aardvark-dns iptables runc catatonit debootstrap podman-compose docker-compose curl)
missing=()
for package in "${packages[@]}"; do
  [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]] || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  echo "deploy: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/messages-deploy-apt.log 2>&1 ||
    { tail -n 20 /tmp/messages-deploy-apt.log; echo "deploy: apt-get install failed" >&2; exit 1; }
fi
if [[ ! -d $app_root/node_modules/tsx ]]; then
  (cd "$app_root" && npm ci --no-audit --no-fund --loglevel=error) || { echo "deploy: npm ci failed" >&2; exit 1; }
fi

passed=0
failed=0
summary=()
# record NAME STATUS STARTED: a stage's line in the summary.
record() {
  if (($2 == 0)); then
    passed=$((passed + 1))
    summary+=("ok   $1 ($((SECONDS - $3))s)")
  else
    failed=$((failed + 1))
    summary+=("FAIL $1 ($((SECONDS - $3))s)")
  fi
}
run() {
  local name=$1 started=$SECONDS status=0
  echo
  echo "=== deploy: $name"
  bash "$deploy_dir/$name.sh" || status=$?
  record "$name" "$status" "$started"
}

# side_by_side "SCRIPT [ARG]"...: stages that mostly wait on containers, run at once, each into a log of its own that
# is printed whole when the stage ends.
logs=$(mktemp -d /tmp/messages-deploy-logs.XXXXXX)
declare -A stage_of=() started_at=()
trap '((${#stage_of[@]} == 0)) || kill "${!stage_of[@]}" 2>/dev/null; rm -rf "$logs"' EXIT
side_by_side() {
  local stage words name pid status
  echo
  echo "=== deploy: side by side, each printed when it ends: $(printf '%s, ' "$@" | sed 's/, $//')"
  for stage in "$@"; do
    read -r -a words <<<"$stage"
    name=${stage// /-}
    bash "$deploy_dir/${words[0]}.sh" "${words[@]:1}" >"$logs/$name.log" 2>&1 &
    stage_of[$!]=$name
    started_at[$!]=$SECONDS
  done
  while ((${#stage_of[@]} > 0)); do
    status=0
    wait -n -p pid "${!stage_of[@]}" || status=$?
    name=${stage_of[$pid]}
    echo
    echo "=== deploy: $name"
    cat "$logs/$name.log"
    record "$name" "$status" "${started_at[$pid]}"
    unset "stage_of[$pid]" "started_at[$pid]"
  done
}

started=$SECONDS
run images
if ((failed == 0)); then
  side_by_side compose "systemd debian12" "systemd debian13"
  # Alone: its Sentinel failover tests hold latencies to bounds that a busy machine could break.
  run redis-compat
fi
echo
printf '%s\n' "${summary[@]}"
echo "deploy: $passed passed, $failed failed, $((SECONDS - started))s in all"
((failed == 0))
