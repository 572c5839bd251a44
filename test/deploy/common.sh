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

# The stand-in VM of systemd.sh, built by images.sh. An image that exists is never rebuilt: change the tag when the
# recipe in images.sh changes.
vm_image=localhost/messages-systemd-vm:bookworm-2

step() { printf '\n== %s: %s\n' "$(basename "$0" .sh)" "$*"; }
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
