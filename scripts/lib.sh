# Shared set-up steps for scripts/run and scripts/test (sourced, not run).
# Each step is idempotent and quick when there is nothing to do.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/.ci-work"
VENV="$ROOT/.venv"
DEMO_BASE_TAG="modeldeck/demo-base:bookworm"
mkdir -p "$WORK"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
in_ci() { [ "${CI:-}" = "true" ]; }

apt_install() {
    # Install Debian packages that are missing; only as root (CI, containers).
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! is_root; then
        say "Missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
        return 1
    fi
    say "Installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # One package-list update per run, however many steps install something.
    if [ -z "${MODELDECK_APT_UPDATED:-}" ]; then
        apt-get update -qq >/dev/null
        export MODELDECK_APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_python() {
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON="$py"; return 0
        fi
    done
    die "Python 3.11 or newer is needed (e.g. 'sudo apt-get install python3 python3-venv')."
}

ensure_venv() {
    # Install the locked dependency set (requirements/app.txt for "app", requirements/test.txt
    # for "test": every file's hash checked) and then the project itself into .venv, again
    # whenever the lock or pyproject.toml changed. scripts/lock refreshes the locks.
    ensure_python
    if [ ! -x "$VENV/bin/python" ]; then
        say "Creating $VENV"
        "$PYTHON" -m venv "$VENV" || { apt_install python3-venv && rm -rf "$VENV" && "$PYTHON" -m venv "$VENV"; }
    fi
    local lock="$ROOT/requirements/$1.txt" stamp="$VENV/.modeldeck-installed" have
    [ -f "$lock" ] || die "No lock file $lock: run scripts/lock."
    have="$(cat "$stamp" 2>/dev/null || true)"
    # The test set holds the app set at the same versions, so a test install serves scripts/run.
    [ "$have" = "$(venv_stamp test)" ] && return 0
    [ "$have" = "$(venv_stamp "$1")" ] && return 0
    say "Installing ModelDeck and its locked dependencies ($lock) into .venv"
    "$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r "$lock" \
        || die "Could not install the locked dependencies from $lock (see pip's message above)."
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" 2>/dev/null \
        || "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
    venv_stamp "$1" > "$stamp"
}

venv_stamp() {
    # What an install of set $1 was made from: pyproject.toml and that set's lock file.
    printf '%s-%s\n' "$(cat "$ROOT/pyproject.toml" "$ROOT/requirements/$1.txt" 2>/dev/null | sha256sum | cut -c1-16)" "$1"
}

ensure_qt_libs() {
    # The system libraries that PySide6's Qt and its xcb, Wayland and offscreen platform plugins load,
    # read from the plugins themselves with ldd (desktop/platform_libs.py maps each soname to its
    # Debian and Fedora package), and a font. Needs the venv (ensure_venv) for PySide6's files.
    local pkgs rc=0
    pkgs="$(cd "$ROOT" && "$VENV/bin/python" -m desktop.platform_libs packages debian)" || rc=$?
    [ $rc -eq 3 ] && say "Qt loads a library desktop/platform_libs.py has no package for (see above)."
    if ! command -v dpkg >/dev/null && command -v dnf >/dev/null; then
        pkgs="$(cd "$ROOT" && "$VENV/bin/python" -m desktop.platform_libs packages fedora)" || true
        [ -z "$pkgs" ] && return 0
        say "Qt's platform plugins need: sudo dnf install $pkgs"; return 1
    fi
    # shellcheck disable=SC2086  # one word per package
    apt_install fonts-dejavu-core $pkgs || { say "Qt may not open a window without those libraries."; return 1; }
    (cd "$ROOT" && "$VENV/bin/python" -m desktop.platform_libs check xcb offscreen >&2)
}

XVFB_PID=""
stop_x_display() { [ -n "$XVFB_PID" ] && kill "$XVFB_PID" 2>/dev/null; XVFB_PID=""; return 0; }

ensure_x_display() {
    # A real X server for the GUI tests: Xvfb on a display number it picks free itself (-displayfd),
    # stopped when the calling script exits. Exports DISPLAY and QT_QPA_PLATFORM=xcb.
    apt_install xvfb xdotool x11-utils || return 1
    local fdfile="$WORK/xvfb-display.$$"
    rm -f "$fdfile"
    Xvfb -displayfd 3 -screen 0 1920x1200x24 -nolisten tcp 3>"$fdfile" >"$WORK/xvfb.log" 2>&1 &
    XVFB_PID=$!
    trap stop_x_display EXIT
    for _ in $(seq 1 100); do  # Xvfb writes the number once it accepts connections
        if [ -s "$fdfile" ]; then
            export DISPLAY=":$(tr -d '[:space:]' < "$fdfile")" QT_QPA_PLATFORM=xcb
            rm -f "$fdfile"
            xdpyinfo >/dev/null 2>&1 && { say "Xvfb on $DISPLAY (stopped on exit)"; return 0; }
        fi
        kill -0 "$XVFB_PID" 2>/dev/null || break
        sleep 0.1
    done
    say "Xvfb did not start; its log ends with:"; tail -5 "$WORK/xvfb.log" >&2 || true
    stop_x_display; rm -f "$fdfile"; return 1
}

docker_answers() { docker info >/dev/null 2>&1; }

ensure_docker() {
    # A Docker engine that answers on the default socket (or DOCKER_HOST). As root with no
    # engine running, install Debian's docker.io and start dockerd ourselves.
    command -v docker >/dev/null && docker_answers && return 0
    if ! is_root; then
        say "No Docker engine answers. Install and start it: sudo apt-get install docker.io && sudo systemctl start docker"
        say "and let your user use it: sudo usermod -aG docker \$USER (then log in again)."
        return 1
    fi
    apt_install docker.io iptables ca-certificates || return 1
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl start docker 2>/dev/null && for _ in $(seq 1 30); do docker_answers && return 0; sleep 1; done
    fi
    # No systemd (containers, CI sandboxes): run dockerd by hand, clearing a stale pid file.
    local pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "Removing stale $pidfile"; rm -f "$pidfile"
    fi
    if ! pgrep -x dockerd >/dev/null; then
        say "Starting dockerd (log: $WORK/dockerd.log)"
        nohup dockerd >"$WORK/dockerd.log" 2>&1 &
    fi
    for _ in $(seq 1 60); do docker_answers && return 0; sleep 1; done
    say "dockerd did not answer within 60 s; its log ends with:"; tail -20 "$WORK/dockerd.log" >&2 || true
    return 1
}

ensure_node_tools() {
    # The simulated second machine of the multi-node tests (tests/support/remote_node.py): a network
    # namespace and veth link (iproute2, util-linux's nsenter/unshare), Debian's OpenSSH server and
    # client, and its own containerd and dockerd (from docker.io, ensure_docker). Needs root.
    apt_install openssh-server openssh-client iproute2 util-linux || return 1
    if ! is_root; then
        say "The multi-node tests make network namespaces and run sshd and dockerd: they need root."; return 1
    fi
    mkdir -p /run/sshd   # sshd's privilege separation folder (a boot without systemd has none)
    local tool
    for tool in ip nsenter unshare sshd ssh ssh-keygen ssh-keyscan containerd ctr dockerd; do
        command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
            || { say "$tool is missing: the simulated second machine cannot run (apt-get install docker.io openssh-server)."; return 1; }
    done
    # A container without CAP_SYS_ADMIN cannot make namespaces: find out now, not in the middle of the tests.
    local probe="mdn-probe-$$"
    if ! ip netns add "$probe" 2>/dev/null; then
        say "Cannot make a network namespace here (ip netns add): run as root with CAP_SYS_ADMIN and CAP_NET_ADMIN."
        return 1
    fi
    ip netns del "$probe"
}

ensure_demo_base() {
    # The demo image's base: MODELDECK_DEMO_BASE_IMAGE when set; else the public slim Python
    # image when a registry answers; else a Debian image made here with debootstrap.
    if [ -n "${MODELDECK_DEMO_BASE_IMAGE:-}" ]; then return 0; fi
    local default="python:3.12-slim"
    # A base image already made here wins over asking a registry (which may hang, not refuse).
    if ! docker image inspect "$default" >/dev/null 2>&1 && docker image inspect "$DEMO_BASE_TAG" >/dev/null 2>&1; then
        export MODELDECK_DEMO_BASE_IMAGE="$DEMO_BASE_TAG"; return 0
    fi
    if docker image inspect "$default" >/dev/null 2>&1 || timeout 120 docker pull -q "$default" >/dev/null 2>&1; then
        export MODELDECK_DEMO_BASE_IMAGE="$default"; return 0
    fi
    if ! docker image inspect "$DEMO_BASE_TAG" >/dev/null 2>&1; then
        say "No registry answers: making $DEMO_BASE_TAG from Debian packages (debootstrap, ~1 min)"
        "$ROOT/scripts/make-base-image" "$DEMO_BASE_TAG"
    fi
    export MODELDECK_DEMO_BASE_IMAGE="$DEMO_BASE_TAG"
}

ensure_bundle_tools() {
    # What PyInstaller (scripts/bundle, tests/test_bundle.py) needs on Debian: objdump, and, for
    # Debian's own python3, the shared libpython it does not install by itself.
    local py ver
    py="$(readlink -f "$VENV/bin/python")"
    if dpkg -S "$py" >/dev/null 2>&1; then
        ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt_install binutils "libpython$ver"
    else
        apt_install binutils
    fi
}

ensure_llamacpp_image() {
    # llama.cpp's llama-server built here (CPU only) from the llama-cpp-python sdist, once per machine
    # and source version, for the llama.cpp tests (a real runtime with a real GGUF). The same builder
    # as the backend's launch fallback (backend/local_images.py); the sdist stays in the user's cache
    # (~/.cache/modeldeck/sources, or MODELDECK_CACHE_DIR_SOURCES). Uses MODELDECK_DEMO_BASE_IMAGE.
    local tag log="$WORK/llama-cpp-build.log"
    tag="$("$VENV/bin/python" -m backend.local_images llama-cpp --print-tag)" || return 1
    docker image inspect "$tag" >/dev/null 2>&1 && return 0
    say "Building $tag: llama.cpp's llama-server from source (CPU; 5-10 minutes on 2 cores, once per machine; log: $log)"
    if ! "$VENV/bin/python" -m backend.local_images llama-cpp >"$log" 2>&1; then
        tail -25 "$log" >&2
        return 1
    fi
}
