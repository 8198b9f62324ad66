#!/usr/bin/env bash
# Builds docker/Dockerfile.cpu for real and checks the running container through its API, with no Docker
# engine and no image registry: only Debian's packages (podman, debootstrap, runc) and PyPI.
#
#   1. base   a Debian bookworm root file system made by debootstrap (python3 and a venv at /opt/python on
#             PATH, so `python` and `pip` work as on python:3.11-slim), imported as $BASE_IMAGE
#   2. build  podman build -f docker/Dockerfile.cpu --build-arg BASE=$BASE_IMAGE (host network: pip reaches PyPI)
#   3. start  the image's own command (localgpt serve on 0.0.0.0:8000, API key required) with the model store
#             mounted read-only on /models and $PLANNER as planner; waits for GET /health == 200
#   4. check  two one-task requests through the API: POST /results "Say '...' aloud" (Piper), its WAV fetched by
#             GET /v1/files/{id} and uploaded by POST /v1/files, then "Transcribe the speech in ..." (whisper);
#             the transcript must hold the sentence
# It prints each stage's time and exits non-zero on the first failure (the container's log is printed then).
#
# Needs root (rootful podman). Settings (environment):
#   LOCALGPT_TEST_STORE    model store with the test profile (default: ./model_store)
#   LOCALGPT_BOX_CACHE     keeps the debootstrap tarball between runs (default: ~/.cache/localgpt-box)
#   DEBIAN_MIRROR          default http://deb.debian.org/debian
#   LOCALGPT_LLM_LOCK      a lock file: the run stage (which loads a GGUF) holds it, for machines that share CPUs
#   LOCALGPT_CHECK_PLANNER the container's planner (default qwen2.5-coder-1.5b-instruct, the starter planner;
#                          smollm2-135m-instruct planned "Transcribe the speech in u-....wav." as TTS -> ASR of
#                          its own "Hello world", so the check failed on the planner, not the container)
#   KEEP=1                 leave the container running after the check
#   LOCALGPT_BOX_IF_ABLE=1 (.ci/run sets it) where this machine cannot run containers at all (not root, the
#                          tools not installable, debootstrap failing, podman unable to start the base image),
#                          print exactly what failed and exit 0; from the Dockerfile build on, a failure
#                          is the product's and exits non-zero as always
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STORE=$(realpath "${LOCALGPT_TEST_STORE:-$ROOT/model_store}")
CACHE=${LOCALGPT_BOX_CACHE:-$HOME/.cache/localgpt-box}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_IMAGE=localhost/localgpt-base:$SUITE
IMAGE=localhost/localgpt:cpu-check
NAME=localgpt-cpu-check-$$
PORT=${PORT:-18731}
KEY=check-$RANDOM$RANDOM
SENTENCE="the quick brown fox jumps over the lazy dog"
PLANNER=${LOCALGPT_CHECK_PLANNER:-qwen2.5-coder-1.5b-instruct}
SECONDS=0
stage_name=""
stage_t=0
stage() { # the previous stage's time, then the next stage's name
    [ -z "$stage_name" ] || printf '   %s: %ss\n' "$stage_name" "$((SECONDS - stage_t))"
    stage_name=$1 stage_t=$SECONDS
    [ -z "$1" ] || printf '== %s\n' "$1"
}
fail() { echo "FAIL: $*" >&2; exit 1; }
unable() { # this machine cannot run containers: not the product's failure
    if [ "${LOCALGPT_BOX_IF_ABLE:-0}" = 1 ]; then
        echo "CONTAINER CHECK NOT RUN: this machine cannot run containers: $*" >&2
        exit 0
    fi
    fail "$*"
}
[ "$(id -u)" = 0 ] || unable "run as root: rootful podman builds and runs the image"
for model in piper-en-us-joe-medium whisper-tiny-en "$PLANNER"; do
    [ -d "$STORE/$model" ] || fail "$model is not in $STORE: python download_models.py --profile test"
done

stage "tools (podman, runc, debootstrap from Debian)"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null; } \
        || unable "apt-get install podman runc debootstrap failed"
fi
# runc, not crun: Debian's crun refuses cgroup v1/hybrid hosts ("cgroups in hybrid mode not supported").
# Limits at or below this shell's hard limits: podman's defaults (nofile 1048576) are refused without
# CAP_SYS_RESOURCE ("setrlimit RLIMIT_NOFILE: Operation not permitted").
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
PODMAN=(podman --runtime runc)
podman --version

stage "base image $BASE_IMAGE (debootstrap $SUITE)"
if ! podman image exists "$BASE_IMAGE"; then
    tarball=$CACHE/debootstrap-$SUITE.tar  # Debian's packages as debootstrap left them
    mkdir -p "$CACHE"
    if [ ! -s "$tarball" ]; then
        rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" \
            || { tail -20 "$CACHE/debootstrap.log"; unable "debootstrap $SUITE from $MIRROR failed (log above)"; }
        chroot "$rootfs" apt-get clean
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    tar --numeric-owner -C "$rootfs" -xf "$tarball"
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
        "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SUITE" >"$rootfs/etc/apt/sources.list"
    # The CAs this host adds (a TLS-inspecting proxy's, say) so that pip reaches PyPI from the build as it
    # does from the host; PIP_CERT points pip (which otherwise trusts only its own bundle) at Debian's store.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1 || unable "update-ca-certificates in the chroot"
    fi
    chroot "$rootfs" python3 -m venv /opt/python || unable "chroot into the debootstrap tree failed"
    tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
        --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null || unable "podman import of the base image failed"
    rm -rf "$rootfs"
fi
"${PODMAN[@]}" run --rm "${LIMITS[@]}" --network none "$BASE_IMAGE" python -c 'import sys; print("base:", sys.version)' \
    || unable "podman cannot start a container from $BASE_IMAGE (podman run failed, its message above)"

stage "build $IMAGE from docker/Dockerfile.cpu"
podman build --isolation chroot --network host "${LIMITS[@]}" -f docker/Dockerfile.cpu \
    --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" . >"$CACHE/build.log" 2>&1 \
    || { tail -40 "$CACHE/build.log"; fail "podman build (log: $CACHE/build.log)"; }
podman image inspect --format 'image: {{.Id}} {{.Size}} bytes' "$IMAGE"

run_and_check() {
    stage "start the container (store $STORE on /models, read-only)"
    trap '[ "${KEEP:-0}" = 1 ] || podman rm -f -v "$NAME" >/dev/null 2>&1 || true' EXIT
    "${PODMAN[@]}" run -d --name "$NAME" "${LIMITS[@]}" -p "127.0.0.1:$PORT:8000" \
        -v "$STORE:/models:ro" -e LOCALGPT_API_KEY="$KEY" -e LOCALGPT_PLANNER="$PLANNER" \
        -e LOCALGPT_THREADS="${LOCALGPT_THREADS:-2}" "$IMAGE" >/dev/null
    python3 "$ROOT/docker/check_api.py" "http://127.0.0.1:$PORT" "$KEY" "$SENTENCE" "health" \
        || { podman logs --tail 60 "$NAME"; fail "/health"; }
    stage "TTS -> ASR through the API"
    python3 "$ROOT/docker/check_api.py" "http://127.0.0.1:$PORT" "$KEY" "$SENTENCE" "speech" \
        || { podman logs --tail 60 "$NAME"; fail "TTS -> ASR"; }
    stage ""
}
if [ -n "${LOCALGPT_LLM_LOCK:-}" ]; then
    stage "wait for $LOCALGPT_LLM_LOCK"
    exec 9>"$LOCALGPT_LLM_LOCK"
    flock 9
fi
run_and_check
echo "OK: built and checked in ${SECONDS}s"
