#!/usr/bin/env bash
# Build slmctl's CPU container image without a container registry or a Docker daemon:
#
#   1. wheels   - slmctl and its pinned dependencies are built/downloaded on this host with pip
#                 (PyPI), llama-cpp-python compiled here once (cached); nothing is compiled in the image;
#   2. rootfs   - a small Debian rootfs (minbase + python3, python3-venv, ca-certificates, libgomp1)
#                 made with mmdebstrap from Debian's mirrors (cached as a tarball);
#   3. image    - buildah puts the two together: a venv in /opt/slmctl installed from the wheels with
#                 `pip install --no-index`, user slmctl (uid 10001), SLMCTL_HOME=/data as a volume,
#                 port 11434, a HEALTHCHECK on /api/health, OCI labels - the same image the Dockerfile
#                 describes for hosts that have a registry (tests/test_container.py keeps them in step);
#   4. --smoke  - podman runs it: a tiny model and an API key in a fresh volume, `GET /api/health`
#                 and a generation from the host, the image's own HEALTHCHECK, SIGTERM, clean-up.
#
# Usage: deploy/build-image.sh [--smoke] [--image NAME] [--tag TAG] [--cache DIR] [--cpu avx2|native]
#        (deploy/build-image.sh --help lists every option). Run as root (mmdebstrap's root mode,
#        buildah/podman's system storage). A rerun reuses the cached wheels and rootfs (seconds, not
#        minutes); --rebuild drops the cache.
set -euo pipefail

# --- what the image is; Dockerfile and Dockerfile.cuda use the same values (tests/test_container.py) ---
IMAGE_USER=slmctl
IMAGE_UID=10001
DATA_DIR=/data
VENV_DIR=/opt/slmctl
PORT=11434
HEALTH_PATH=/api/health
HEALTHCHECK_BIN=/usr/local/bin/slmctl-healthcheck
ENTRYPOINT='["slmctl"]'
CMD='["serve", "--host", "0.0.0.0:11434"]'
SOURCE_URL=https://github.com/slmctl/slmctl
DEBIAN_PACKAGES=python3,python3-venv,ca-certificates,libgomp1
# llama.cpp for any x86-64 CPU with AVX2/FMA (2013 on) rather than for this host's CPU (-march=native)
AVX2_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=localhost/slmctl
TAG=
CACHE=${SLMCTL_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slmctl-image}
CPU=avx2
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
PYTHON=
PUSH=
SMOKE=0
BUILD=1
KEEP=0
REBUILD=0
RUNTIME=runc
NETWORK=auto

usage() {
  cat <<EOF
Usage: $0 [options]

Build the slmctl CPU image with mmdebstrap + buildah (no registry, no Docker daemon); --smoke runs it.

  --image NAME         image name (default: $IMAGE)
  --tag TAG            image tag (default: slmctl's version in pyproject.toml)
  --cache DIR          wheels and rootfs cache (default: $CACHE; env SLMCTL_IMAGE_CACHE)
  --cpu avx2|native    llama.cpp build: avx2 runs on any AVX2 x86-64 CPU (default); native reuses
                       pip's build for this host's CPU (faster to build, may crash on other CPUs)
  --python PY          host Python 3.11 that builds the wheels (bookworm's python3 is 3.11)
  --suite SUITE        Debian suite (default: $SUITE; its python3 must be 3.11)
  --mirror URL         Debian mirror (default: $MIRROR)
  --security-mirror URL  (default: $SECURITY_MIRROR)
  --push DEST          also write the image to DEST with 'buildah push', e.g. oci:/tmp/slmctl-oci
                       (an OCI layout) or docker-archive:/tmp/slmctl.tar (for 'docker load')
  --smoke              after building, run it with podman: health, a generation, HEALTHCHECK, SIGTERM
  --smoke-only         run the smoke test on the image already built (no build)
  --runtime NAME       OCI runtime for podman/buildah (default: $RUNTIME)
  --network MODE       smoke test: 'bridge' (-p 127.0.0.1:PORT:$PORT), 'host', or 'auto' (bridge,
                       then host if publishing a port fails) (default: $NETWORK)
  --keep               keep the smoke test's container and volume
  --rebuild            drop the cached wheels and rootfs first
  -h, --help           this help
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --image) IMAGE=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --cpu) CPU=$2; shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --security-mirror) SECURITY_MIRROR=$2; shift 2 ;;
    --push) PUSH=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --smoke-only) SMOKE=1; BUILD=0; shift ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --network) NETWORK=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --rebuild) REBUILD=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-image: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$CPU" in avx2|native) ;; *) echo "build-image: --cpu must be avx2 or native" >&2; exit 2 ;; esac
case "$NETWORK" in auto|bridge|host) ;; *) echo "build-image: --network must be auto, bridge or host" >&2; exit 2 ;; esac

START=$SECONDS
step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - START))" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }
human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1" 2>/dev/null || echo "$1 bytes"; }

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (Debian: apt-get install -y podman buildah mmdebstrap runc uidmap fuse-overlayfs slirp4netns)"
}

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap's root mode and buildah/podman's system storage)"
if [ "$BUILD" -eq 1 ]; then need mmdebstrap buildah; fi
if [ "$SMOKE" -eq 1 ]; then need podman; fi

# Host Python 3.11: the wheels it builds go into bookworm's Python 3.11 (cp311, glibc 2.36).
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3 "$REPO/.venv/bin/python"; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PYTHON=$(command -v "$candidate"); break
    fi
  done
  [ -n "$PYTHON" ] || die "no Python 3.11 on this host (the wheels must match the image's Python 3.11): pass --python"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || die "$PYTHON is not Python 3.11 (the image's python3 is 3.11)"

VERSION=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")
TAG=${TAG:-$VERSION}
REF="$IMAGE:$TAG"

# Explicit ulimits for podman: by default it asks for nofile=1048576 and a large nproc, which a
# sandbox without CAP_SYS_RESOURCE refuses ("error setting rlimit type 7: operation not permitted");
# ask for no more than this shell's hard limits (nproc capped at 16384, enough for a server).
hard_nofile=$(ulimit -Hn); [ "$hard_nofile" = unlimited ] && hard_nofile=1048576
hard_nproc=$(ulimit -Hu); [ "$hard_nproc" = unlimited ] && hard_nproc=16384
NOFILE=$(( hard_nofile < 65536 ? hard_nofile : 65536 ))
NPROC=$(( hard_nproc < 16384 ? hard_nproc : 16384 ))
PODMAN_RUN_FLAGS=(--runtime "$RUNTIME" --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC")

echo "build-image: $REF from $REPO (cache $CACHE, llama.cpp for $CPU CPUs, Debian $SUITE, python $("$PYTHON" -c 'import platform; print(platform.python_version())'))"

# Whatever a step leaves behind goes on exit, failed or not.
WORK="" CTR="" SMOKE_NAME="" SMOKE_VOLUME=""
cleanup() {
  [ -z "$WORK" ] || rm -rf "$WORK"
  [ -z "$CTR" ] || buildah rm "$CTR" >/dev/null 2>&1 || true
  if [ -n "$SMOKE_NAME" ]; then
    if [ "$KEEP" -eq 1 ]; then
      info "kept: container $SMOKE_NAME, volume $SMOKE_VOLUME (--keep)"
    else
      podman rm -f -t 5 "$SMOKE_NAME" >/dev/null 2>&1 || true
      podman volume rm -f "$SMOKE_VOLUME" >/dev/null 2>&1 || true
    fi
  fi
}
trap cleanup EXIT

image_size() {  # bytes, or buildah's rounded figure without podman
  if command -v podman >/dev/null 2>&1; then human "$(podman image inspect --format '{{.Size}}' "$REF")"
  else buildah images --noheading --format '{{.Size}}' "$REF" | head -1; fi
}

build_image() {
  if [ "$REBUILD" -eq 1 ]; then step "dropping the cache $CACHE"; rm -rf "$CACHE"; fi
  mkdir -p "$CACHE"
  WORK=$(mktemp -d "$CACHE/work.XXXXXX")
  local work=$WORK

  # ---- 1. wheels --------------------------------------------------------------------------------
  step "host venv for building wheels ($PYTHON)"
  local hostpy="$CACHE/host-venv/bin/python"
  if [ ! -x "$hostpy" ] || ! "$hostpy" -m pip --version >/dev/null 2>&1; then
    rm -rf "$CACHE/host-venv"
    "$PYTHON" -m venv "$CACHE/host-venv"
    info "created $CACHE/host-venv"
  else
    info "cached: $CACHE/host-venv"
  fi
  # pip, without the "Location ... is ignored" lines a host pip.conf naming absent folders prints
  pip() { "$hostpy" -m pip --disable-pip-version-check "$@" 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'; }

  "$hostpy" - "$REPO/pyproject.toml" > "$work/requirements.txt" <<'PY'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
PY
  local llama_version
  llama_version=$(sed -n 's/^llama-cpp-python==\(.*\)$/\1/p' "$work/requirements.txt")
  [ -n "$llama_version" ] || die "pyproject.toml pins no llama-cpp-python==VERSION"

  local llama_dir="$CACHE/llama-$CPU"
  step "llama-cpp-python $llama_version wheel ($CPU)"
  if compgen -G "$llama_dir/llama_cpp_python-$llama_version-*.whl" >/dev/null; then
    info "cached: $(basename "$(compgen -G "$llama_dir/llama_cpp_python-$llama_version-*.whl" | head -1)")"
  else
    mkdir -p "$llama_dir"
    local t0=$SECONDS
    if [ "$CPU" = avx2 ]; then
      info "compiling llama.cpp with CMAKE_ARGS=\"$AVX2_CMAKE_ARGS\" (several minutes on 2 cores, once)"
      # --no-cache-dir: pip's wheel cache may hold a -march=native build of the same version
      CMAKE_ARGS="$AVX2_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        pip wheel -q --no-cache-dir --no-deps -w "$llama_dir" "llama-cpp-python==$llama_version"
    else
      info "pip wheel (reuses pip's cached build for this host's CPU if there is one)"
      pip wheel -q --no-deps -w "$llama_dir" "llama-cpp-python==$llama_version"
    fi
    info "built in $((SECONDS - t0))s: $(basename "$(compgen -G "$llama_dir/llama_cpp_python-$llama_version-*.whl" | head -1)")"
  fi

  local deps_dir="$CACHE/wheels-cp311" stamp
  stamp=$(sha256sum "$work/requirements.txt" | cut -c1-16)
  step "dependency wheels (pyproject.toml's [project] dependencies)"
  if [ -f "$deps_dir/.stamp" ] && [ "$(cat "$deps_dir/.stamp")" = "$stamp" ]; then
    info "cached: $(find "$deps_dir" -name '*.whl' | wc -l) wheels in $deps_dir"
  else
    rm -rf "$deps_dir"; mkdir -p "$deps_dir"
    # llama-cpp-python resolves to the wheel above (for its own dependencies), then leaves this
    # CPU-independent folder: the image takes it from $llama_dir.
    pip wheel -q -w "$deps_dir" --find-links "$llama_dir" --only-binary llama-cpp-python \
      -r "$work/requirements.txt"
    rm -f "$deps_dir"/llama_cpp_python-*.whl
    echo "$stamp" > "$deps_dir/.stamp"
    info "$(find "$deps_dir" -name '*.whl' | wc -l) wheels in $deps_dir"
  fi

  step "slmctl $VERSION wheel"
  mkdir -p "$work/src" "$work/wheels"
  cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/slmctl" "$work/src/"
  find "$work/src" -name '__pycache__' -type d -prune -exec rm -rf {} +
  pip wheel -q --no-deps -w "$work/wheels" "$work/src"
  cp "$deps_dir"/*.whl "$work/wheels/"
  cp "$(compgen -G "$llama_dir/llama_cpp_python-$llama_version-*.whl" | head -1)" "$work/wheels/"
  info "$(ls "$work/wheels" | grep -c '\.whl$') wheels, $(du -sh "$work/wheels" | cut -f1)"

  # ---- 2. rootfs --------------------------------------------------------------------------------
  local key rootfs
  key=$(printf '%s\n' "$SUITE" "$DEBIAN_PACKAGES" "$MIRROR" "$SECURITY_MIRROR" "minbase merged-usr nodocs v1" | sha256sum | cut -c1-12)
  rootfs="$CACHE/rootfs-$SUITE-$key.tar"
  step "Debian $SUITE rootfs (mmdebstrap --variant=minbase, $DEBIAN_PACKAGES)"
  if [ -f "$rootfs" ]; then
    info "cached: $rootfs ($(human "$(stat -c %s "$rootfs")"))"
  else
    local t0=$SECONDS
    # merged-usr hook: bookworm's /bin -> usr/bin links set up by mmdebstrap (usr-is-merged), so
    # the usrmerge package - and perl with it, 50 MB - stays out. No man pages, docs or locales.
    mmdebstrap --variant=minbase --mode=root --format=tar \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --include="$DEBIAN_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --aptopt='Acquire::Retries "3"' \
      "$SUITE" "$rootfs.part" \
      "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" \
      > "$work/mmdebstrap.log" 2>&1 || { tail -30 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    mv "$rootfs.part" "$rootfs"
    info "built in $((SECONDS - t0))s: $rootfs ($(human "$(stat -c %s "$rootfs")"))"
  fi

  # ---- 3. image ---------------------------------------------------------------------------------
  step "assembling $REF with buildah"
  # docker format: OCI image configs have no HEALTHCHECK field (buildah and podman would drop it)
  CTR=$(buildah from --format docker --name "slmctl-build-$$" scratch)
  local ctr=$CTR
  buildah add --quiet "$ctr" "$rootfs" / >/dev/null
  buildah copy --quiet "$ctr" "$work/wheels" /tmp/wheels >/dev/null
  buildah copy --quiet --chmod 0755 "$ctr" "$REPO/deploy/healthcheck.py" "$HEALTHCHECK_BIN" >/dev/null
  # chroot isolation: no OCI runtime, no network needed (the install is --no-index)
  buildah run --isolation chroot "$ctr" -- /bin/sh -euc "
    python3 -m venv $VENV_DIR
    $VENV_DIR/bin/pip install --quiet --no-index --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/wheels 'slmctl==$VERSION'
    $VENV_DIR/bin/pip check
    # llama-cpp-python's wheel also ships its libraries and headers as site-packages/lib and
    # include (37 MB) for C builds; llama_cpp loads the copies in llama_cpp/lib
    rm -rf /tmp/wheels $VENV_DIR/lib/python3*/site-packages/lib $VENV_DIR/lib/python3*/site-packages/include
    echo '$IMAGE_USER:x:$IMAGE_UID:$IMAGE_UID:slmctl:$DATA_DIR:/usr/sbin/nologin' >> /etc/passwd
    echo '$IMAGE_USER:x:$IMAGE_UID:' >> /etc/group
    mkdir -p $DATA_DIR && chown $IMAGE_UID:$IMAGE_UID $DATA_DIR && chmod 0700 $DATA_DIR
    $VENV_DIR/bin/slmctl --version
  " | sed 's/^/    /'
  buildah config \
    --env "PATH=$VENV_DIR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --env "SLMCTL_HOME=$DATA_DIR" \
    --env "PYTHONUNBUFFERED=1" \
    --env "LANG=C.UTF-8" \
    --user "$IMAGE_UID:$IMAGE_UID" \
    --workingdir "$DATA_DIR" \
    --volume "$DATA_DIR" \
    --port "$PORT/tcp" \
    --entrypoint "$ENTRYPOINT" \
    --cmd "$CMD" \
    --stop-signal SIGTERM \
    --healthcheck "CMD $VENV_DIR/bin/python $HEALTHCHECK_BIN" \
    --healthcheck-interval 30s --healthcheck-timeout 5s \
    --healthcheck-start-period 20s --healthcheck-retries 3 \
    --label "org.opencontainers.image.title=slmctl" \
    --label "org.opencontainers.image.description=Run small language models locally: GGUF through llama.cpp, ONNX through ONNX Runtime GenAI, behind an Ollama/OpenAI-compatible API (CPU build)" \
    --label "org.opencontainers.image.source=$SOURCE_URL" \
    --label "org.opencontainers.image.licenses=MIT" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --label "org.opencontainers.image.base.name=debian:$SUITE (mmdebstrap minbase)" \
    --label "io.slmctl.llama-cpu=$CPU" \
    "$ctr"
  local previous; previous=$(buildah images --noheading --format '{{.ID}}' "$REF" 2>/dev/null | head -1 || true)
  buildah commit --quiet --format docker --rm "$ctr" "$REF" >/dev/null
  CTR=""
  # a rebuild leaves the image it replaced untagged: drop it unless a container still uses it
  if [ -n "$previous" ] && [ "$previous" != "$(buildah images --noheading --format '{{.ID}}' "$REF" | head -1)" ]; then
    buildah rmi "$previous" >/dev/null 2>&1 && info "removed the previous build ($previous)" || true
  fi
  info "built $REF: $(image_size), image id $(buildah images --noheading --format '{{.ID}}' "$REF" | head -1)"
  if [ -n "$PUSH" ]; then
    step "writing $REF to $PUSH"
    buildah push --quiet "$REF" "$PUSH"
    info "written: $PUSH"
  fi
}

# ---- 4. smoke test ------------------------------------------------------------------------------
http() {  # http METHOD URL [BODY] [KEY] -> prints "STATUS BODY"
  "$PYTHON" - "$@" <<'PY'
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 and sys.argv[3] else None
request = urllib.request.Request(url, data=body, method=method)
if body:
    request.add_header("Content-Type", "application/json")
if len(sys.argv) > 4 and sys.argv[4]:
    request.add_header("Authorization", f"Bearer {sys.argv[4]}")
try:
    with urllib.request.urlopen(request, timeout=120) as answer:
        print(answer.status, answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
except Exception as error:
    print(0, f"{type(error).__name__}: {error}")
PY
}

# Run a podman command for its effect: its output (the container id) goes, and so do the "unable to
# get systemd connection" errors podman logs about HEALTHCHECK timers where there is no systemd.
quiet() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | sed -e '/unable to get systemd connection/d' -e '/^[0-9a-f]\{64\}$/d' -e '/^$/d' -e 's/^/    /'
  return "$rc"
}

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

smoke() {
  local name="slmctl-smoke-$$" volume="slmctl-smoke-$$" hostport url key status answer t0
  SMOKE_NAME=$name SMOKE_VOLUME=$volume
  podman image exists "$REF" || die "no image $REF (build it first: drop --smoke-only)"
  # podman schedules the image's HEALTHCHECK with systemd timers; without systemd (a container,
  # this sandbox) it logs "unable to get systemd connection" on every run: the one-shot runs skip
  # the check, the server's runs it only on demand ('podman healthcheck run' below).
  local once=(--no-healthcheck) health=()
  if [ ! -S /run/systemd/private ]; then health=(--health-interval disable); fi
  info "podman run flags: ${PODMAN_RUN_FLAGS[*]} ${health[*]}"

  step "smoke: volume $volume with a tiny model and an admin key (made by the image itself)"
  podman volume create "$volume" >/dev/null
  podman run --rm "${PODMAN_RUN_FLAGS[@]}" "${once[@]}" -v "$volume:$DATA_DIR" --entrypoint "$VENV_DIR/bin/python" "$REF" \
    -m slmctl.testing "$DATA_DIR/tiny.gguf" | sed 's/^/    /'
  podman run --rm "${PODMAN_RUN_FLAGS[@]}" "${once[@]}" -v "$volume:$DATA_DIR" "$REF" import "$DATA_DIR/tiny.gguf" --name tiny 2>&1 | sed 's/^/    /'
  key=$(podman run --rm "${PODMAN_RUN_FLAGS[@]}" "${once[@]}" -v "$volume:$DATA_DIR" "$REF" keys create smoke --role admin 2>/dev/null | tail -1 | tr -d '[:space:]')
  [[ "$key" == slmctl_* ]] || die "slmctl keys create printed no key"
  info "key: ${key:0:12}... ($(podman run --rm "${PODMAN_RUN_FLAGS[@]}" "${once[@]}" -v "$volume:$DATA_DIR" --entrypoint /bin/ls "$REF" -ln "$DATA_DIR/keys.json" | awk '{print $1, "uid=" $3}'))"

  hostport=$(free_port)
  local mode=$NETWORK
  [ "$mode" = auto ] && mode=bridge
  step "smoke: podman run $REF (network: $mode)"
  t0=$SECONDS
  if [ "$mode" = bridge ]; then
    if ! quiet podman run -d --name "$name" "${PODMAN_RUN_FLAGS[@]}" "${health[@]}" -v "$volume:$DATA_DIR" \
         -p "127.0.0.1:$hostport:$PORT" "$REF"; then
      [ "$NETWORK" = auto ] || die "podman run -p failed"
      info "publishing a port failed (no CNI/netavark bridge in this sandbox?): retrying with --network host"
      podman rm -f "$name" >/dev/null 2>&1 || true
      mode=host
    fi
  fi
  if [ "$mode" = host ]; then
    # --network host: the container shares the host's network namespace, so it must bind a free
    # port of the host's; --auth keeps the key check that 0.0.0.0 implies.
    quiet podman run -d --name "$name" "${PODMAN_RUN_FLAGS[@]}" "${health[@]}" -v "$volume:$DATA_DIR" --network host \
      -e "SLMCTL_HEALTHCHECK_URL=http://127.0.0.1:$hostport$HEALTH_PATH" \
      "$REF" serve --host "127.0.0.1:$hostport" --auth || die "podman run --network host failed"
  fi
  url="http://127.0.0.1:$hostport"

  step "smoke: waiting for GET $url$HEALTH_PATH"
  answer=""
  for _ in $(seq 1 120); do
    if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ]; then
      podman logs "$name" 2>&1 | tail -30 >&2
      die "the container stopped (exit code $(podman inspect --format '{{.State.ExitCode}}' "$name"))"
    fi
    answer=$(http GET "$url$HEALTH_PATH")
    [ "${answer%% *}" = 200 ] && break
    sleep 0.5
  done
  [ "${answer%% *}" = 200 ] || { podman logs "$name" 2>&1 | tail -30 >&2; die "no health after 60s: $answer"; }
  info "health after $((SECONDS - t0))s: $answer"

  step "smoke: POST $url/api/generate"
  local body='{"model": "tiny", "prompt": "hi", "stream": false, "options": {"num_predict": 4}}'
  answer=$(http POST "$url/api/generate" "$body")
  info "without a key: ${answer:0:160}"
  [ "${answer%% *}" = 401 ] || die "expected 401 without an API key, got: $answer"
  t0=$SECONDS
  answer=$(http POST "$url/api/generate" "$body" "$key")
  info "with the key ($((SECONDS - t0))s): ${answer:0:400}"
  [ "${answer%% *}" = 200 ] || { podman logs "$name" 2>&1 | tail -30 >&2; die "generation failed: $answer"; }
  "$PYTHON" -c 'import json, sys; a = json.loads(sys.argv[1].split(" ", 1)[1]); assert a["done"] and a["eval_count"] == 4, a; print("    response:", repr(a["response"]), "eval_count:", a["eval_count"], "done_reason:", a.get("done_reason"))' "$answer"

  step "smoke: the image's HEALTHCHECK and user"
  answer=$(podman healthcheck run "$name" 2>&1) || { podman inspect --format '{{json .State.Health}}' "$name" >&2; die "HEALTHCHECK failed: $answer"; }
  info "podman healthcheck run: healthy${answer:+ ($answer)}"
  info "process user: $(podman exec "$name" /bin/sh -c 'echo uid=$(id -u) gid=$(id -g)')"

  step "smoke: SIGTERM (podman stop)"
  t0=$SECONDS
  podman stop -t 30 "$name" 2>&1 | sed -e '/unable to get systemd connection/d' -e "/^$name\$/d"
  status=$(podman inspect --format '{{.State.ExitCode}}' "$name")
  info "stopped in $((SECONDS - t0))s, exit code $status; last log lines:"
  podman logs "$name" 2>&1 | tail -4 | sed 's/^/      /'
  [ "$status" = 0 ] || die "the server exited with $status on SIGTERM"
}

if [ "$BUILD" -eq 1 ]; then build_image; fi
if [ "$SMOKE" -eq 1 ]; then smoke; fi
step "done: $REF, $(image_size), in $((SECONDS - START))s"
