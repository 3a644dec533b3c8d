#!/usr/bin/env bash
# make image: builds the container image wsbridge:dev from deploy/Dockerfile.
#
# No image registry is reachable from these machines, so when the base image
# debian:bookworm-slim is not already present it is made here: debootstrap --variant=minbase
# from the machine's own apt mirror (read from /etc/apt, never written into the repo), trimmed
# like the official slim images, then `docker import`ed under that tag. The Docker engine is
# Debian's docker.io, installed and started when missing. The build runs with --network host so
# that apt inside the build stage reaches the same mirror the machine uses.
#
# Environment: IMAGE (default wsbridge:dev), BASE_IMAGE (default debian:bookworm-slim),
# WSBRIDGE_APT_MIRROR (override the mirror read from /etc/apt), DOCKER_BUILD_ARGS (extra flags),
# IMAGE_SOURCE=worktree (default: the sources as they are in the work tree) or head (the
# committed sources, `git archive HEAD`, with the work tree's deploy/Dockerfile: a clean image
# while the work tree is mid-edit).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-wsbridge:dev}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
SUITE=bookworm

log() { echo "image: $*" >&2; }
CLEANUP=()
cleanup() { local d; for d in "${CLEANUP[@]}"; do $SUDO rm -rf "$d"; done; }
trap cleanup EXIT
die() { echo "image: error: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: run as root (docker, debootstrap)"
  SUDO="sudo"
fi

apt_install() {  # apt_install PKG...: installs the Debian packages that are missing
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/tmp/wsbridge-image-apt.log 2>&1 || die "apt-get could not install ${missing[*]} (see /tmp/wsbridge-image-apt.log)"
}

# --- Docker engine ----------------------------------------------------------------------------
ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null || apt_install docker.io
  command -v docker >/dev/null || apt_install docker.io
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: /tmp/dockerd.log)"
    $SUDO setsid dockerd >/tmp/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    if [ -S /var/run/docker.sock ] && docker info >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  tail -n 20 /tmp/dockerd.log >&2 || true
  die "the Docker engine did not answer within 60 s (see /tmp/dockerd.log)"
}

# --- The machine's apt sources ------------------------------------------------------------------
# Prints "URI SUITE" for each enabled binary (deb) source in /etc/apt, one-line and deb822 formats.
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [opts] URI SUITE COMPONENT...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush(   i, j) {
        if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no")
          for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print uris[i], suites[j]
        types = ""; enabled = "yes"; nu = 0; ns = 0
      }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = $1; sub(/:$/, "", key); key = tolower(key)
        if (key == "types") { types = ""; for (i = 2; i <= NF; i++) types = types " " $i; types = types " " }
        else if (key == "enabled") enabled = $2
        else if (key == "uris") for (i = 2; i <= NF; i++) uris[++nu] = $i
        else if (key == "suites") for (i = 2; i <= NF; i++) suites[++ns] = $i
      }
      END { flush() }' "$f"
  done
}

# The mirror of the Debian archive: the URI of the first source for suite "bookworm".
apt_mirror() {
  if [ -n "${WSBRIDGE_APT_MIRROR:-}" ]; then echo "$WSBRIDGE_APT_MIRROR"; return; fi
  apt_sources | awk -v s="$SUITE" '$2 == s { print $1; exit }'
}

# --- The base image -----------------------------------------------------------------------------
build_base() {
  apt_install debootstrap debian-archive-keyring
  local mirror dir
  mirror=$(apt_mirror)
  [ -n "$mirror" ] || die "no apt source for suite '$SUITE' in /etc/apt; set WSBRIDGE_APT_MIRROR"
  dir=$(mktemp -d /var/tmp/wsbridge-rootfs.XXXXXX)
  CLEANUP+=("$dir")
  log "$BASE_IMAGE is not present: debootstrap --variant=minbase $SUITE from the machine's mirror"
  local t0=$SECONDS
  if ! $SUDO debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$SUITE" "$dir" "$mirror" >/tmp/wsbridge-debootstrap.log 2>&1; then
    tail -n 20 /tmp/wsbridge-debootstrap.log >&2
    die "debootstrap failed (see /tmp/wsbridge-debootstrap.log)"
  fi
  log "debootstrap done in $((SECONDS - t0)) s"

  # apt sources of the image: the machine's own bookworm, -updates and -security sources.
  {
    apt_sources | awk -v s="$SUITE" '$2 == s || $2 == s "-updates" || $2 == s "-security" { print "deb " $1 " " $2 " main" }' |
      awk '!seen[$0]++'
  } | $SUDO tee "$dir/etc/apt/sources.list" >/dev/null
  # The same acquire policy as the machine (e.g. a snapshot mirror whose Release files expired,
  # or a proxy): copy just those settings.
  apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy|Max-FutureTime) ' |
    $SUDO tee "$dir/etc/apt/apt.conf.d/10host-acquire" >/dev/null || true

  # Trim like the official -slim images: no docs, man pages or translations, clean apt caches.
  $SUDO tee "$dir/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  $SUDO tee "$dir/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' | $SUDO tee "$dir/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
  echo 'APT::AutoRemove::SuggestsImportant "false";' | $SUDO tee "$dir/etc/apt/apt.conf.d/docker-autoremove-suggests" >/dev/null
  $SUDO find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  $SUDO rm -rf "$dir"/usr/share/{man,info,groff,lintian,linda}/* "$dir"/usr/share/locale/* \
    "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/var/log/*.log "$dir"/tmp/* 2>/dev/null || true
  # Host-specific files that must not leak into the image.
  $SUDO rm -f "$dir/etc/hostname" "$dir/etc/resolv.conf"
  : | $SUDO tee "$dir/etc/machine-id" >/dev/null 2>&1 || true

  log "importing the root file system as $BASE_IMAGE"
  $SUDO tar --numeric-owner -C "$dir" -c . |
    docker import --change 'CMD ["bash"]' --message "debootstrap --variant=minbase $SUITE" - "$BASE_IMAGE" >/dev/null
}

ensure_docker
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base image $BASE_IMAGE present"
else
  build_base
fi

CONTEXT=$ROOT
case "${IMAGE_SOURCE:-worktree}" in
  worktree) log "docker build -t $IMAGE (deploy/Dockerfile; context: the work tree less .dockerignore)" ;;
  head)
    CONTEXT=$(mktemp -d /var/tmp/wsbridge-context.XXXXXX)
    CLEANUP+=("$CONTEXT")
    git -C "$ROOT" archive --format=tar HEAD | tar -x -C "$CONTEXT"
    mkdir -p "$CONTEXT/deploy"
    cp "$ROOT/deploy/Dockerfile" "$ROOT/deploy/healthcheck.sh" "$CONTEXT/deploy/"
    cp "$ROOT/.dockerignore" "$CONTEXT/"
    log "docker build -t $IMAGE (deploy/Dockerfile; context: git HEAD $(git -C "$ROOT" rev-parse --short HEAD))" ;;
  *) die "IMAGE_SOURCE must be worktree or head" ;;
esac
t0=$SECONDS
# The legacy builder: BuildKit is not part of Debian's docker.io client setup here, and it would
# try to reach a registry for its front end. --network host: apt in the build stage uses the
# machine's mirror exactly as the machine does.
set +e +o pipefail
# shellcheck disable=SC2086
DOCKER_BUILDKIT=0 docker build --network host --force-rm -f "$CONTEXT/deploy/Dockerfile" -t "$IMAGE" \
  ${DOCKER_BUILD_ARGS:-} "$CONTEXT" 2>&1 | grep --line-buffered -v -e '^DEPRECATED: The legacy builder' \
  -e 'BuildKit is currently disabled' -e 'Install the buildx component' \
  -e 'https://docs.docker.com/go/buildx/' -e '^ *environment-variable\.$' -e '^ *$'
rc=${PIPESTATUS[0]}
set -e -o pipefail
[ "$rc" -eq 0 ] || die "docker build failed (exit $rc)"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built $IMAGE in $((SECONDS - t0)) s: $(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }')"
