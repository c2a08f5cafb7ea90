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
    # (Re)install the project into .venv when pyproject.toml changed since the last time.
    ensure_python
    if [ ! -x "$VENV/bin/python" ]; then
        say "Creating $VENV"
        "$PYTHON" -m venv "$VENV" || { apt_install python3-venv && "$PYTHON" -m venv "$VENV"; }
    fi
    local stamp="$VENV/.modeldeck-installed" want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$1"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "Installing ModelDeck and its dependencies into .venv"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        local extra=""; [ "$1" = test ] && extra="[test]"
        "$VENV/bin/python" -m pip install -q -e "$ROOT$extra"
        echo "$want" > "$stamp"
    fi
}

ensure_qt_libs() {
    # The system libraries PySide6's wheels load, even offscreen.
    apt_install libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libglib2.0-0 fonts-dejavu-core \
        || say "Qt may not start without those libraries."
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
