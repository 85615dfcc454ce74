#!/usr/bin/env bash
# The container image: `make image` (build) and `make image-test` (build, then run real containers).
#
#   tools/image.sh build       build $IMAGE from docker/Dockerfile
#   tools/image.sh test        build, then tests/image/ against real containers (pytest)
#   tools/image.sh available   exit 0 when an image can be built here (installing buildah and
#                              podman when possible), 3 when not; .ci/run uses it as its guard
#   tools/image.sh base        (buildah) make the local Debian bookworm base image when missing
#
# Which tool: a Docker daemon that answers `docker info` (build: docker build; run: docker run);
# otherwise buildah builds and podman runs. As root on Debian, missing buildah/podman/runc/
# debootstrap are installed with apt-get (non-interactively). Without a Docker daemon the public
# base image is not pulled: the base is a Debian bookworm made locally by `debootstrap
# --variant=minbase` and imported into containers-storage as $IMAGE_BASE_LOCAL (python3 then comes
# from Debian's packages, 3.11 in bookworm). podman runs containers with runc and explicit ulimits
# (crun, and podman's default ulimits, are refused on some hosts).
#
# Environment: IMAGE (iasql-proxy:latest), IMAGE_BASE (the Dockerfile's BASE; default: the
# Dockerfile's for docker, $IMAGE_BASE_LOCAL for buildah), IMAGE_BASE_LOCAL
# (localhost/iasql-base:bookworm), IMAGE_TOOL (docker or buildah: skip the detection),
# DEBIAN_MIRROR (http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-iasql-proxy:latest}
IMAGE_BASE_LOCAL=${IMAGE_BASE_LOCAL:-localhost/iasql-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# podman's flags that work on these hosts (see the header)
PODMAN=(podman --runtime runc)
PODMAN_RUN_ARGS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

say() { echo "image: $*" >&2; }

docker_works() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# Install buildah, podman, runc and debootstrap from Debian when missing (root + apt-get only).
install_buildah() {
    local need=()
    for tool in buildah podman runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
    done
    [[ ${#need[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${need[*]}: install them (Debian: apt-get install buildah podman runc debootstrap) or start a Docker daemon"
        return 1
    fi
    say "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
        say "apt-get install ${need[*]} failed"
        return 1
    }
}

# Sets TOOL to docker or buildah (installing buildah when needed); returns 1 when neither is possible.
choose_tool() {
    if [[ -n "${IMAGE_TOOL:-}" ]]; then
        TOOL=$IMAGE_TOOL
    elif docker_works; then
        TOOL=docker
    else
        TOOL=buildah
    fi
    case "$TOOL" in
        docker) docker_works || { say "IMAGE_TOOL=docker but no Docker daemon answers"; return 1; } ;;
        buildah) install_buildah || return 1 ;;
        *) say "IMAGE_TOOL must be docker or buildah, not $TOOL"; return 1 ;;
    esac
}

# The local Debian bookworm base for buildah (debootstrap, then podman import), made once.
make_base() {
    if podman image exists "$IMAGE_BASE_LOCAL"; then
        return 0
    fi
    local dir
    dir=$(mktemp -d /var/tmp/iasql-base.XXXXXX)
    say "making $IMAGE_BASE_LOCAL with debootstrap --variant=minbase bookworm ($DEBIAN_MIRROR)"
    if ! debootstrap --variant=minbase bookworm "$dir" "$DEBIAN_MIRROR" >"$dir.log" 2>&1; then
        tail -n 20 "$dir.log" >&2
        rm -rf "$dir" "$dir.log"
        say "debootstrap failed"
        return 1
    fi
    # security and point-release updates, as the public Debian images have them
    cat > "$dir/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -c . | podman import -q - "$IMAGE_BASE_LOCAL" >/dev/null
    rm -rf "$dir" "$dir.log"
}

build() {
    choose_tool || exit 1
    local started=$SECONDS args=()
    # Where HTTPS goes through an intercepting proxy, pip in the build needs the host's CA bundle:
    # given as a build secret (mounted for the pip steps only, never stored in the image).
    local cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
    [[ -n "$cert" && -s "$cert" ]] && args+=(--secret "id=pip_cert,src=$cert")
    if [[ $TOOL == docker ]]; then
        [[ -n "${IMAGE_BASE:-}" ]] && args+=(--build-arg "BASE=$IMAGE_BASE")
        say "docker build -t $IMAGE ${args[*]}"
        DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile -t "$IMAGE" "${args[@]}" .
    else
        local base=${IMAGE_BASE:-$IMAGE_BASE_LOCAL}
        [[ "$base" == "$IMAGE_BASE_LOCAL" ]] && make_base
        args+=(--build-arg "BASE=$base")
        say "buildah bud --isolation chroot -t $IMAGE ${args[*]}"
        buildah bud --isolation chroot --layers -f docker/Dockerfile -t "$IMAGE" "${args[@]}" .
    fi
    say "built $IMAGE in $((SECONDS - started)) s"
}

run_test() {
    build
    local runner
    if [[ $TOOL == docker ]]; then
        runner="docker"
    else
        runner="${PODMAN[*]}"
    fi
    make -s system-deps install  # psql on the host, and moto in the virtualenv
    local started=$SECONDS
    IASQL_IMAGE="$IMAGE" IASQL_IMAGE_RUNNER="$runner" IASQL_IMAGE_RUN_ARGS="${PODMAN_RUN_ARGS[*]}" \
        .venv/bin/pytest -q -p no:cacheprovider -rA tests/image
    say "image test passed in $((SECONDS - started)) s"
}

case "${1:-}" in
    build) build ;;
    test) run_test ;;
    available) choose_tool || exit 3 ;;
    base) install_buildah && make_base ;;
    *) echo "usage: $0 build|test|available|base" >&2; exit 2 ;;
esac
