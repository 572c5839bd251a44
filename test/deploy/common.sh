# shellcheck shell=bash
# Sourced by the deploy tests: paths, the podman settings this machine needs, a fresh clone, and bounded waiting.
set -euo pipefail

deploy_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
app_root=$(cd "$deploy_dir/../.." && pwd)
# Kept between runs: the debootstrap package cache, the base root filesystem and the podman settings.
state_dir=${MESSAGES_DEPLOY_STATE:-/var/tmp/messages-deploy}
mkdir -p "$state_dir"

# Private podman settings (tests never edit /etc): the hard open-files limit here is below what podman asks the
# runtime for ("error setting rlimit type 7"); crun refuses this machine's hybrid cgroups, runc runs on them;
# Debian installs catatonit (init: true) outside podman's default path.
export CONTAINERS_CONF="$state_dir/containers.conf"
cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = []
init_path = "/usr/bin/catatonit"

[engine]
runtime = "runc"
CONF

# The images images.sh builds. An image that exists is never rebuilt: change the tag of a localhost/ image when its
# recipe in images.sh changes (remove a stand-in under an official name by hand: podman rmi <name>).
node_line=24
node_image=docker.io/library/node:24-trixie-slim         # the Dockerfile's FROM
valkey_image=docker.io/valkey/valkey:8                   # the Compose file's Redis
redis8_image=docker.io/library/redis:8                   # docs/deploy.md's other choice for it
prometheus_image=docker.io/prom/prometheus:v2.53.3       # the Compose file's metrics profile
vm12_image=localhost/messages-systemd-vm:bookworm-3      # systemd.sh: Debian 12, redis-server 7.0, upstream Node 24
vm13_image=localhost/messages-systemd-vm:trixie-1        # systemd.sh: Debian 13, valkey-server 8.1, Debian's nodejs
compat_image=localhost/messages-redis-compat:trixie-1    # redis-compat.sh: Debian 13's Redis 8.0 and Valkey 8.1

# step WHAT: a heading, with the seconds since the script started.
step() { printf '\n== %s: %s (at %ss)\n' "$(basename "$0" .sh)" "$*" "$SECONDS"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS WHAT COMMAND...: run COMMAND once a second until it succeeds, or fail after SECONDS.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what: not within ${seconds}s"
    sleep 1
  done
  printf 'ok: %s\n' "$what"
}

# fresh_clone DIR: this tree as a clone of it would hold it (tracked and new files, nothing ignored, uncommitted work
# included), without touching the working tree.
fresh_clone() {
  mkdir -p "$1"
  (cd "$app_root" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done |
    tar --null -T - -c) | tar -C "$1" -x
}
