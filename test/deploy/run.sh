#!/usr/bin/env bash
# The deploy suite: installs the Debian packages it needs when missing, builds the stand-in images once, then boots
# the Compose path and the systemd path for real, and runs the Redis-facing tests against Debian 13's Redis 8.0 and
# Valkey 8.1. Run as root from anywhere: bash test/deploy/run.sh
# About 8 minutes once the images exist; a first run on a new machine adds about 5 (packages, debootstrap).
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
run() {
  local name=$1 started=$SECONDS
  echo
  echo "=== deploy: $name"
  if bash "$deploy_dir/$name.sh"; then
    passed=$((passed + 1))
    summary+=("ok   $name ($((SECONDS - started))s)")
  else
    failed=$((failed + 1))
    summary+=("FAIL $name ($((SECONDS - started))s)")
  fi
}

run images
if ((failed == 0)); then
  run compose
  run redis-compat
  run systemd
fi
echo
printf '%s\n' "${summary[@]}"
echo "deploy: $passed passed, $failed failed"
((failed == 0))
