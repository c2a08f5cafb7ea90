"""The real `modeldeck` command on the X display: it spawns its backend, maps its windows, quits on Ctrl+Q.

Seen from outside, as a person's X server sees it (xdotool, xwininfo), with a throw-away HOME and
XDG_CONFIG_HOME so that the person's own settings, token and backend are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import DISPLAY_PROBLEM, skip_or_fail
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.slow]

MODELDECK = Path(sys.executable).with_name("modeldeck")  # the console script pip made from pyproject.toml


def _tools() -> tuple[str, str]:
    if DISPLAY_PROBLEM:
        pytest.skip(DISPLAY_PROBLEM)  # tests/conftest.py's _real_display fails it in CI
    xdotool, xwininfo = shutil.which("xdotool"), shutil.which("xwininfo")
    if not (xdotool and xwininfo):
        skip_or_fail("xdotool and xwininfo are needed (apt-get install xdotool x11-utils; scripts/test does)")
    return xdotool, xwininfo


def _find_window(xdotool: str, pid: int, pattern: str, timeout: float = 90) -> str:
    """The id of a mapped (viewable) top-level window of ``pid`` whose WM_NAME matches ``pattern``, waiting for it.

    ``pattern`` is a POSIX extended regex (xdotool's); WM_NAME is the window's own title, without
    the " — ModelDeck" that Qt adds to _NET_WM_NAME.
    """
    found = subprocess.run([xdotool, "search", "--sync", "--all", "--onlyvisible", "--pid", str(pid),
                            "--name", pattern], capture_output=True, text=True, timeout=timeout)
    assert found.returncode == 0 and found.stdout.split(), found.stderr
    return found.stdout.split()[0]


def _stop_backends_spawned_for(home: Path) -> None:
    """Kill what a desktop killed by the test left running: backends whose MODELDECK_HOME is ``home``."""
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"MODELDECK_HOME={home}".encode() in environ:
            os.kill(int(entry.name), signal.SIGKILL)


def _window_info(xwininfo: str, wid: str) -> dict[str, str]:
    out = subprocess.run([xwininfo, "-id", wid], capture_output=True, text=True, timeout=10).stdout
    return dict(m.groups() for m in re.finditer(r"^\s*([A-Z][\w -]*?):\s+(.*)$", out, re.M))


def _key(xdotool: str, wid: str, keys: str) -> None:
    """Give ``wid`` the keyboard (no window manager does it here) and type ``keys`` as a person would (XTEST)."""
    subprocess.run([xdotool, "windowfocus", "--sync", wid], check=True, timeout=10)
    subprocess.run([xdotool, "key", "--clearmodifiers", keys], check=True, timeout=10)


def _start_modeldeck(home: Path) -> tuple[int, Path, subprocess.Popen]:
    """The `modeldeck` command on this display with ``home`` as HOME and XDG folders; (backend port, log, process)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MODELDECK_TOKEN", "MODELDECK_HOME", "MODELDECK_PORT")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               XDG_CACHE_HOME=str(home / "cache"), QT_QPA_PLATFORM="xcb")
    log = home / "modeldeck.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(MODELDECK), "--backend-url", f"http://127.0.0.1:{port}"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return port, log, proc


def test_modeldeck_maps_its_window_spawns_its_backend_and_quits_on_ctrl_q(tmp_path):
    xdotool, xwininfo = _tools()
    port, log, proc = _start_modeldeck(tmp_path)
    try:
        main = _find_window(xdotool, proc.pid, "^ModelDeck$")
        info = _window_info(xwininfo, main)
        assert info["Map State"] == "IsViewable", info
        assert int(info["Width"]) >= 800 and int(info["Height"]) >= 500, info  # the window's own size, no WM

        # A new person's first start: the first-run check opens once the spawned backend answers.
        dialog = _find_window(xdotool, proc.pid, "^ModelDeck: first-run check$")
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        assert (tmp_path / "config" / "modeldeck" / "token").is_file(), sorted(p.name for p in tmp_path.rglob("*"))[:40]  # in the temp home
        _key(xdotool, dialog, "Escape")
        search = [xdotool, "search", "--all", "--onlyvisible", "--pid", str(proc.pid), "--name", "first-run check"]
        wait_until(lambda: not subprocess.run(search, capture_output=True, text=True, timeout=10).stdout.split(),
                   10, what="Escape to close the first-run check")

        _key(xdotool, main, "ctrl+q")
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
            _stop_backends_spawned_for(tmp_path / "config" / "modeldeck")
    output = log.read_text(errors="replace")
    assert not re.search(r"^qt\.|QXcb|xcb_", output, re.M), output[-3000:]  # no warning from Qt's X11 side
    with socket.socket() as sock:  # the backend it spawned stopped with it
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert (tmp_path / "config" / "ModelDeck" / "ModelDeck.conf").is_file()  # its settings: the temp home's


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_quits_modeldeck_like_ctrl_q_and_stops_the_backend_it_started(tmp_path, signum):
    """Logging out or `kill` sends SIGTERM (a closed terminal SIGHUP): the spawned backend must not outlive the app."""
    xdotool, _ = _tools()
    port, log, proc = _start_modeldeck(tmp_path)
    try:
        _find_window(xdotool, proc.pid, "^ModelDeck: first-run check$")  # its backend answers by then
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
        with socket.socket() as sock:  # checked before the clean-up below could hide a survivor
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "the backend the app started outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        _stop_backends_spawned_for(tmp_path / "config" / "modeldeck")
    assert f"{signum.name} received, quitting" in log.read_text(errors="replace")
