"""Qt's platform plugins and the system libraries they load (desktop/platform_libs.py), read with ldd from the
installed PySide6; and the one line the app says, instead of Qt's abort, when one of them is really missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop import platform_libs
from tests.conftest import DISPLAY_PROBLEM, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = "libxcb-icccm.so.4"  # what a fresh Debian 12 lacked (issue 11); Qt's xcb plugin links it
MODELDECK = Path(sys.executable).with_name("modeldeck")  # the console script pip made


def test_every_library_the_plugins_load_is_in_the_table_and_installed():
    """A PySide6 that needs one more library, or a set-up that did not install one, fails here."""
    for name in platform_libs.PLATFORMS:
        result = platform_libs.check(name, optional=True)
        assert not result.absent_files, f"PySide6 no longer ships {result.absent_files}: update PLATFORMS"
        assert len(result.files) >= 2 and result.system, result  # ldd really ran on the plugin files
        unknown = sorted(result.system - set(platform_libs.SYSTEM_LIBS))
        assert not unknown, (f"Qt's {name} plugin loads {unknown}, which SYSTEM_LIBS in desktop/platform_libs.py "
                             "does not map to Debian and Fedora packages: add them")
        assert not result.missing, (f"{name}: {', '.join(result.missing)} not installed "
                                    f"({platform_libs.install_hint(result.missing)}; scripts/test does it as root)")
    xcb = platform_libs.check("xcb")
    assert {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"} <= xcb.system


def test_ldd_output_is_read_line_by_line():
    out = ("/x/libqxcb.so:\n"
           "\tlinux-vdso.so.1 (0x00007ffd)\n"
           "\tlibxcb-icccm.so.4 => not found\n"
           "\tlibQt6Gui.so.6 => /v/PySide6/Qt/plugins/platforms/../../lib/libQt6Gui.so.6 (0x00007f)\n"
           "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
           "\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
           "\tstatically linked\n")
    assert platform_libs.parse_ldd(out) == {
        "libxcb-icccm.so.4": None, "libQt6Gui.so.6": "/v/PySide6/Qt/plugins/platforms/../../lib/libQt6Gui.so.6",
        "libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6", "ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2"}


def test_install_hint_names_debian_and_fedora_packages_and_unknown_libraries():
    hint = platform_libs.install_hint(["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"])
    assert hint == ("sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 (Debian/Ubuntu) or "
                    "sudo dnf install xcb-util-cursor xcb-util-keysyms xcb-util-wm (Fedora)")
    assert "find the package of libnew.so.1" in platform_libs.install_hint(["libnew.so.1"])


@pytest.mark.parametrize(("env", "args", "order"), [
    ({"DISPLAY": ":0"}, [], ["xcb"]),
    ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, [], ["wayland", "xcb"]),  # then XWayland
    ({"XDG_SESSION_TYPE": "wayland"}, [], ["wayland", "xcb"]),
    ({}, [], ["xcb"]),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, [], ["offscreen"]),
    ({"QT_QPA_PLATFORM": "wayland;xcb:fontengine=freetype"}, [], ["wayland", "xcb"]),
    ({"QT_QPA_PLATFORM": "offscreen"}, ["-platform", "xcb"], ["xcb"]),
])
def test_platforms_are_tried_in_qts_order(env, args, order):
    assert platform_libs.candidates(env, args) == order


def test_no_display_named_is_said_in_one_line():
    assert platform_libs.preflight({}) == platform_libs.NO_DISPLAY
    assert platform_libs.preflight({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert platform_libs.preflight({"QT_QPA_PLATFORM": "vnc"}) is None  # a plugin it does not know: Qt's word


def _hide_library(tmp_path: Path, soname: str, command: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run ``command`` in a mount namespace where ``soname`` is not installed (and nothing else changed).

    The library's folder is replaced, for that process tree only, by a folder of links to every
    other file in it; the loader, ``ldd`` and Qt all look there. Needs unshare(1) and either root or
    unprivileged user namespaces.
    """
    path = platform_libs.ldd(platform_libs.check("xcb").files).get(soname)
    assert path, f"{soname} is not installed here: run scripts/test (as root) or install it"
    libdir = Path(os.path.realpath(path)).parent
    orig, farm = tmp_path / "orig", tmp_path / "farm"
    orig.mkdir(parents=True)
    farm.mkdir()
    stem = soname.split(".so")[0] + ".so"
    for entry in os.scandir(libdir):
        if not entry.name.startswith(stem):
            (farm / entry.name).symlink_to(orig / entry.name)
    script = (f'mount --bind "{libdir}" "{orig}" && mount --bind "{farm}" "{libdir}" && exec "$@"')
    ns = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--mount"]
    return subprocess.run([*ns, "sh", "-c", script, "hide", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _namespaces_or_skip():
    probe = subprocess.run(["unshare", "--mount", "true"] if os.geteuid() == 0 else
                           ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode != 0:
        skip_or_fail("hiding a library needs unshare(1) with root or user namespaces")


@pytest.mark.gui
def test_a_missing_library_is_named_with_its_install_command_instead_of_qts_abort(tmp_path):
    _namespaces_or_skip()
    env = {**os.environ, "DISPLAY": os.environ.get("DISPLAY") or ":0", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("QT_QPA_PLATFORM", None)  # the platform a person's session picks: xcb where DISPLAY is set
    # The hiding is real: Qt itself cannot load its xcb plugin there, and aborts with its own message.
    qt = _hide_library(tmp_path / "qt", HIDDEN, [sys.executable, "-c",
                       "from PySide6.QtWidgets import QApplication; QApplication([])"], env)
    assert qt.returncode != 0 and 'Could not load the Qt platform plugin "xcb"' in qt.stderr, qt.stderr[-2000:]

    app = _hide_library(tmp_path / "app", HIDDEN, [str(MODELDECK)], env)
    lines = app.stderr.strip().splitlines()
    assert app.returncode == 1 and len(lines) == 1, app.stderr[-3000:]
    assert lines[0].startswith("ModelDeck cannot open its window: Qt's xcb platform plugin needs libxcb-icccm.so.4, "
                               "not installed. Install: sudo apt-get install libxcb-icccm4 (Debian/Ubuntu) or "
                               "sudo dnf install xcb-util-wm (Fedora)"), lines[0]
    assert "qt.qpa" not in app.stderr  # it stopped before Qt tried

    check = _hide_library(tmp_path / "check", HIDDEN, [str(MODELDECK), "--self-check"], env)
    assert check.returncode == 1, check.stdout + check.stderr[-2000:]
    assert "[FAIL] platform  ModelDeck cannot open its window: Qt's xcb platform plugin needs libxcb-icccm.so.4" \
        in check.stdout and check.stdout.rstrip().endswith("self-check FAILED"), check.stdout


@pytest.mark.gui
def test_where_wayland_does_not_answer_qt_runs_on_xcb(tmp_path):
    """WAYLAND_DISPLAY set but no compositor there: Qt tries wayland, then xcb on DISPLAY (XWayland's role)."""
    if DISPLAY_PROBLEM:
        pytest.skip(DISPLAY_PROBLEM)  # the _real_display fixture fails it in CI
    env = {**os.environ, "WAYLAND_DISPLAY": f"modeldeck-test-{os.getpid()}", "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("QT_QPA_PLATFORM", None)
    assert platform_libs.candidates(env) == ["wayland", "xcb"] and platform_libs.preflight(env) is None
    run = subprocess.run([sys.executable, "-c", "from PySide6.QtGui import QGuiApplication; "
                          "print(QGuiApplication([]).platformName())"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "xcb", run.stdout + run.stderr
