#!/usr/bin/env bash
# Builds the stand-in base images the deploy tests need (no image registry is reachable here), under the official
# names so the Dockerfile and the Compose file stay unchanged; an image that already exists is kept.
# Recipe and timings: ../shared/DEPLOY-TESTING.md. Needs root, debootstrap and podman.
source "$(dirname "$0")/common.sh"

debian_image=docker.io/library/debian:bookworm-slim
node_image=docker.io/library/node:20-bookworm-slim
redis_image=docker.io/library/redis:7

missing=()
for image in "$debian_image" "$node_image" "$redis_image" "$vm_image"; do
  podman image exists "$image" || missing+=("$image")
done
if ((${#missing[@]} == 0)); then
  echo "images: all present, nothing to build"
  exit 0
fi
echo "images: building ${missing[*]}"

mirror=$(awk '$1 == "URIs:" || $1 == "deb" {
  for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' \
  /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "$state_dir/build.XXXXXX")
mounted=()
cleanup() {
  local dir
  for dir in "${mounted[@]}"; do umount "$dir" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# The debootstrapped tree is kept between runs: debootstrap is the slow step.
rootfs=$state_dir/rootfs-bookworm
if [[ ! -x $rootfs/bin/bash ]]; then
  step "debootstrap bookworm from $mirror"
  mkdir -p "$state_dir/debs"
  rm -rf --one-file-system "$rootfs.partial"
  debootstrap --variant=minbase --cache-dir="$state_dir/debs" bookworm "$rootfs.partial" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log"; fail "debootstrap"; }
  mv "$rootfs.partial" "$rootfs"
fi

# copy_tree NAME: a private copy of the base tree to change.
copy_tree() {
  cp -a "$rootfs" "$work/$1"
  echo "$work/$1"
}

# chroot_install TREE PACKAGE...: Debian packages into TREE, with no service started while installing.
chroot_install() {
  local tree=$1
  shift
  cp /etc/resolv.conf "$tree/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$tree/usr/sbin/policy-rc.d"
  chmod 0755 "$tree/usr/sbin/policy-rc.d"
  mount -t proc proc "$tree/proc"
  mounted+=("$tree/proc")
  chroot "$tree" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$tree" apt-get install -y -qq --no-install-recommends "$@" >"$work/apt.log" 2>&1 ||
    { tail -n 20 "$work/apt.log"; fail "apt-get install $*"; }
  umount "$tree/proc"
  rm -f "$tree/usr/sbin/policy-rc.d"
}

trim_tree() {
  local tree=$1
  rm -rf "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/info/* \
    "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin "$tree"/var/cache/apt/archives/*.deb
  : >"$tree/etc/resolv.conf"
}

# import_tree TREE IMAGE --change...: the tree as a single-layer image.
import_tree() {
  local tree=$1 image=$2
  shift 2
  trim_tree "$tree"
  tar -C "$tree" -c . | podman import "$@" - "$image" >/dev/null
  echo "images: built $image"
}

# install_node TREE BINDIR LIBDIR: this host's node 20 and npm 10, as the official image and NodeSource lay them out.
install_node() {
  local tree=$1 bindir=$2 libdir=$3
  [[ -f $state_dir/npm.tgz ]] || (cd "$work" && npm pack --silent npm@10 >/dev/null && mv npm-*.tgz "$state_dir/npm.tgz")
  install -m 0755 "$(command -v node)" "$tree$bindir/node"
  mkdir -p "$tree$libdir/node_modules/npm"
  tar -xzf "$state_dir/npm.tgz" -C "$tree$libdir/node_modules/npm" --strip-components=1
  ln -sf "../lib/node_modules/npm/bin/npm-cli.js" "$tree$bindir/npm"
  ln -sf "../lib/node_modules/npm/bin/npx-cli.js" "$tree$bindir/npx"
  # Behind a TLS-inspecting proxy the host trusts extra CAs; npm ci inside the image must trust them too.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cat /usr/local/share/ca-certificates/*.crt >"$tree/usr/local/etc/host-extra-ca.pem"
  else
    : >"$tree/usr/local/etc/host-extra-ca.pem"
  fi
}

if ! podman image exists "$debian_image"; then
  step "$debian_image"
  import_tree "$(copy_tree debian)" "$debian_image" --change 'CMD ["bash"]'
fi

if ! podman image exists "$node_image"; then
  step "$node_image"
  tree=$(copy_tree node)
  install_node "$tree" /usr/local/bin /usr/local/lib
  chroot "$tree" groupadd --gid 1000 node
  chroot "$tree" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  import_tree "$tree" "$node_image" --change 'CMD ["node"]' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/etc/host-extra-ca.pem'
fi

if ! podman image exists "$redis_image"; then
  step "$redis_image"
  tree=$(copy_tree redis)
  chroot "$tree" groupadd --system --gid 999 redis
  chroot "$tree" useradd --system --uid 999 --gid redis --home-dir /data --no-create-home redis
  chroot_install "$tree" redis-server
  install -d -o 999 -g 999 "$tree/data"
  # The official image compiles protected mode off (Docker publishes ports explicitly); Debian's binary has it on.
  cat >"$tree/usr/local/bin/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
if [ "$1" = redis-server ]; then set -- "$@" --protected-mode no; fi
exec "$@"
SCRIPT
  chmod 0755 "$tree/usr/local/bin/docker-entrypoint.sh"
  import_tree "$tree" "$redis_image" --change 'USER redis' --change 'WORKDIR /data' --change 'EXPOSE 6379' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change 'CMD ["redis-server"]'
fi

# A stand-in Debian 12 VM: systemd as PID 1, Debian's redis-server, openssl and logrotate, and node 20 with npm where NodeSource puts
# them (/usr/bin, /usr/lib/node_modules).
if ! podman image exists "$vm_image"; then
  step "$vm_image"
  tree=$(copy_tree systemd)
  chroot_install "$tree" systemd systemd-sysv dbus procps redis-server openssl ca-certificates logrotate
  install_node "$tree" /usr/bin /usr/lib
  : >"$tree/etc/machine-id"
  for unit in getty@.service console-getty.service systemd-udevd.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service; do
    ln -sf /dev/null "$tree/etc/systemd/system/$unit"
  done
  import_tree "$tree" "$vm_image" --change 'CMD ["/sbin/init"]' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/etc/host-extra-ca.pem'
fi
echo "images: done"
