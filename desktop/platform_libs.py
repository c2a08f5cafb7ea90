"""The system libraries Qt's platform plugins load: which are missing here, and the command that installs them.

The PySide6 wheel carries Qt itself, not the X11/Wayland/GL libraries its plugins link to. The set
is read from the plugins with ``ldd`` (never guessed); ``SYSTEM_LIBS`` maps each soname to the
Debian/Ubuntu and Fedora package that has it. ``scripts/lib.sh`` (``ensure_qt_libs``) installs the
packages for what ``ldd`` finds missing, ``desktop/app.py`` says in one line what to install before
Qt would abort, and ``tests/desktop/test_platform_libs.py`` fails when a PySide6 release loads a
library this table does not know. Stdlib only: it runs before any Qt library is loaded.

``python -m desktop.platform_libs packages debian|fedora``  packages for the missing libraries
``python -m desktop.platform_libs check [PLATFORM]``         one line per platform, exit 1 if one lacks a library
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: soname -> (Debian/Ubuntu package, Fedora package). Keep sorted; the test says what is missing.
SYSTEM_LIBS: dict[str, tuple[str, str]] = {
    "ld-linux-aarch64.so.1": ("libc6", "glibc"),
    "ld-linux-x86-64.so.2": ("libc6", "glibc"),
    "libbrotlicommon.so.1": ("libbrotli1", "libbrotli"),
    "libbrotlidec.so.1": ("libbrotli1", "libbrotli"),
    "libbsd.so.0": ("libbsd0", "libbsd"),
    "libc.so.6": ("libc6", "glibc"),
    "libcap.so.2": ("libcap2", "libcap"),
    "libcom_err.so.2": ("libcom-err2", "libcom_err"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libdl.so.2": ("libc6", "glibc"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libexpat.so.1": ("libexpat1", "expat"),
    "libffi.so.8": ("libffi8", "libffi"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libgcc_s.so.1": ("libgcc-s1", "libgcc"),
    "libgcrypt.so.20": ("libgcrypt20", "libgcrypt"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLdispatch.so.0": ("libglvnd0", "libglvnd"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libgpg-error.so.0": ("libgpg-error0", "libgpg-error"),
    "libgssapi_krb5.so.2": ("libgssapi-krb5-2", "krb5-libs"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libk5crypto.so.3": ("libk5crypto3", "krb5-libs"),
    "libkeyutils.so.1": ("libkeyutils1", "keyutils-libs"),
    "libkrb5.so.3": ("libkrb5-3", "krb5-libs"),
    "libkrb5support.so.0": ("libkrb5support0", "krb5-libs"),
    "liblz4.so.1": ("liblz4-1", "lz4-libs"),
    "liblzma.so.5": ("liblzma5", "xz-libs"),
    "libm.so.6": ("libc6", "glibc"),
    "libmd.so.0": ("libmd0", "libmd"),
    "libpcre2-8.so.0": ("libpcre2-8-0", "pcre2"),
    "libpng16.so.16": ("libpng16-16", "libpng"),
    "libpthread.so.0": ("libc6", "glibc"),
    "libresolv.so.2": ("libc6", "glibc"),
    "libstdc++.so.6": ("libstdc++6", "libstdc++"),
    "libsystemd.so.0": ("libsystemd0", "systemd-libs"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libXau.so.6": ("libxau6", "libXau"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libXdmcp.so.6": ("libxdmcp6", "libXdmcp"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libz.so.1": ("zlib1g", "zlib-ng-compat"),
    "libzstd.so.1": ("libzstd1", "libzstd"),
}
DISTROS = {"debian": (0, "sudo apt-get install", "Debian/Ubuntu"), "fedora": (1, "sudo dnf install", "Fedora")}

#: Every platform loads these (relative to PySide6's folder): the Qt modules the desktop imports
#: and the image plugins its icons need.
COMMON = ("QtCore.abi3.so", "QtGui.abi3.so", "QtWidgets.abi3.so", "QtNetwork.abi3.so", "QtSvg.abi3.so")
COMMON_OPTIONAL = ("Qt/plugins/imageformats/libqsvg.so", "Qt/plugins/iconengines/libqsvgicon.so")
#: Per platform: (files without which Qt cannot start on it, files it loads when it can and
#: works without: GL integrations, Wayland shells and decorations).
PLATFORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "xcb": (("Qt/plugins/platforms/libqxcb.so", "Qt/lib/libQt6XcbQpa.so.6"),
            ("Qt/plugins/xcbglintegrations/libqxcb-glx-integration.so",
             "Qt/plugins/xcbglintegrations/libqxcb-egl-integration.so")),
    "wayland": (("Qt/plugins/platforms/libqwayland.so", "Qt/lib/libQt6WaylandClient.so.6"),
                ("Qt/plugins/wayland-shell-integration/libxdg-shell.so",
                 "Qt/plugins/wayland-graphics-integration-client/libqt-plugin-wayland-egl.so",
                 "Qt/plugins/wayland-decoration-client/libbradient.so")),
    "offscreen": (("Qt/plugins/platforms/libqoffscreen.so",), ()),
}
_LDD_LINE = re.compile(r"^\s+(\S+)(?: => (not found|\S+))?(?: \(0x[0-9a-f]+\))?\s*$")


@dataclass(frozen=True)
class LibraryCheck:
    """What ``ldd`` said about one platform's files: the system libraries loaded and those missing."""

    platform: str
    files: tuple[Path, ...]
    system: frozenset[str]  # sonames resolved outside PySide6 (or not at all)
    missing: tuple[str, ...]  # sonames not found, sorted
    absent_files: tuple[str, ...] = ()  # plugin files the PySide6 installation lacks

    @property
    def ok(self) -> bool:
        return not self.missing and not self.absent_files


def pyside_dir() -> Path | None:
    """PySide6's package folder, found without importing it (importing loads Qt's libraries)."""
    if getattr(sys, "frozen", False) and (Path(getattr(sys, "_MEIPASS", "")) / "PySide6").is_dir():
        return Path(sys._MEIPASS) / "PySide6"
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def parse_ldd(output: str) -> dict[str, str | None]:
    """``ldd`` output for one or more files -> soname: resolved path (None when "not found")."""
    libs: dict[str, str | None] = {}
    for line in output.splitlines():
        m = _LDD_LINE.match(line)
        if not m:
            continue  # a "file:" header of a multi-file run, "statically linked"
        name, target = m.group(1), m.group(2)
        if name.startswith("linux-vdso") or name.startswith("linux-gate"):
            continue  # the kernel's, not a file
        if target is None:  # "/lib64/ld-linux-x86-64.so.2 (0x...)": the loader, by path
            libs.setdefault(Path(name).name, name)
        elif target == "not found":
            libs[name] = None
        else:
            libs.setdefault(name, target)
    return libs


def ldd(files: Iterable[Path], env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Run ``ldd`` once on ``files``; {} when there is no ``ldd`` (not glibc Linux)."""
    files = [str(f) for f in files]
    exe = shutil.which("ldd")
    if not files or exe is None:
        return {}
    run = subprocess.run([exe, *files], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ if env is None else env))
    return parse_ldd(run.stdout)


def check(platform: str, optional: bool = False, root: Path | None = None,
          env: Mapping[str, str] | None = None) -> LibraryCheck:
    """The system libraries that ``platform`` needs (with ``optional``: also its optional plugins)."""
    root = root or pyside_dir()
    required, extra = PLATFORMS[platform]
    names = COMMON + required + ((COMMON_OPTIONAL + extra) if optional else ())
    files = tuple(root / n for n in names) if root else ()
    present = tuple(f for f in files if f.exists())
    absent = tuple(n for n in COMMON + required if root is None or not (root / n).exists())
    libs = ldd(present, env)
    # Shipped with the Python packages (Qt, ICU, shiboken) or in the bundle, not by the system.
    bundled = str((Path(sys._MEIPASS) if getattr(sys, "frozen", False) else (root or Path("/-")).parent).resolve())
    system = frozenset(name for name, path in libs.items()
                       if path is None or not os.path.realpath(path).startswith(bundled + os.sep))
    missing = tuple(sorted(name for name, path in libs.items() if path is None))
    return LibraryCheck(platform, present, system, missing, absent)


def packages(sonames: Iterable[str], distro: str) -> tuple[list[str], list[str]]:
    """(packages that provide ``sonames`` on ``distro``, sonames this table does not know)."""
    column = DISTROS[distro][0]
    known = sorted({SYSTEM_LIBS[s][column] for s in sonames if s in SYSTEM_LIBS})
    return known, sorted(s for s in sonames if s not in SYSTEM_LIBS)


def install_hint(sonames: Iterable[str]) -> str:
    """``sudo apt-get install … (Debian/Ubuntu) or sudo dnf install … (Fedora)`` for ``sonames``."""
    sonames = sorted(set(sonames))
    commands = []
    for distro, (_col, command, label) in DISTROS.items():
        pkgs, _unknown = packages(sonames, distro)
        if pkgs:
            commands.append(f"{command} {' '.join(pkgs)} ({label})")
    hint = " or ".join(commands)
    unknown = packages(sonames, "debian")[1]
    if unknown:
        hint += ("; " if hint else "") + (f"find the package of {', '.join(unknown)} with apt-file search / "
                                          f"dnf provides '*/{unknown[0]}'")
    return hint


def candidates(env: Mapping[str, str], qt_args: Iterable[str] = ()) -> list[str]:
    """The platforms Qt will try, in order, as ``QGuiApplication`` picks them on Linux.

    ``-platform NAME`` or ``QT_QPA_PLATFORM`` (a ``;`` list, ``name:options``) decide alone;
    otherwise Wayland first where ``WAYLAND_DISPLAY`` is set or the session is a Wayland one, then
    xcb where ``DISPLAY`` is set, then xcb, Qt's default (qtbase, QGuiApplicationPrivate::
    createPlatformIntegration).
    """
    args = list(qt_args)
    for flag in ("-platform", "--platform"):
        if flag in args[:-1]:
            return [p.split(":")[0] for p in args[args.index(flag) + 1].split(";") if p]
    if env.get("QT_QPA_PLATFORM"):
        return [p.split(":")[0] for p in env["QT_QPA_PLATFORM"].split(";") if p]
    order = []
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        order.append("wayland")
    order.append("xcb")
    return order


NO_DISPLAY = ("ModelDeck cannot open its window: there is no display (DISPLAY and WAYLAND_DISPLAY are unset). "
              "Start it in a desktop session, or set DISPLAY to an X server's (Xvfb for a headless one).")


def has_display(env: Mapping[str, str]) -> bool:
    """Whether a display is named: X11's ``DISPLAY``, or Wayland's (Qt's default socket in a Wayland session)."""
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland")


def _loads(platform: str) -> bool:
    """Whether the dynamic loader can load ``platform``'s plugin files, with everything they link to.

    The same ``dlopen`` Qt will make a moment later, so loading them here costs nothing extra;
    False for any reason (a missing library, a missing file) leaves the telling to ``check``.
    """
    root = pyside_dir()
    if root is None:
        return False
    try:
        for name in reversed(PLATFORMS[platform][0]):  # the Qt library first, then the plugin on it
            ctypes.CDLL(str(root / name))
    except OSError:
        return False
    return True


def preflight(env: Mapping[str, str] | None = None, qt_args: Iterable[str] = ()) -> str | None:
    """One line saying why no platform Qt would try can load, with the install command; None if one can.

    Platforms this module does not know (``vnc``, ``eglfs``...) and systems without ``ldd`` are left
    to Qt. Where Wayland lacks a library but xcb has all, Qt falls back to XWayland: no message.
    With the libraries there but no display named, it says so (Qt would abort on xcb).
    """
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux") or shutil.which("ldd") is None:
        return None
    qt_args = list(qt_args)
    tried = candidates(env, qt_args)
    named = has_display(env) or "-display" in qt_args or "--display" in qt_args
    results = []
    for name in tried:
        if name not in PLATFORMS:
            return None
        if _loads(name):  # the everyday case, in milliseconds; ldd (~0.1 s) only to say what is missing
            return None if name == "offscreen" or named else NO_DISPLAY
        result = check(name, env=env)
        if result.ok:
            return None if name == "offscreen" or named else NO_DISPLAY
        results.append(result)
    missing = sorted({s for r in results for s in r.missing})
    absent = [f"{r.platform}: {', '.join(r.absent_files)}" for r in results if r.absent_files]
    several = len(results) > 1
    what = f"Qt's {' and '.join(r.platform for r in results)} platform plugin{'s' if several else ''}"
    if not missing:
        return (f"ModelDeck cannot open its window: {what} {'are' if several else 'is'} not part of this "
                f"PySide6 installation ({'; '.join(absent)}); reinstall ModelDeck (scripts/run) or PySide6.")
    return (f"ModelDeck cannot open its window: {what} {'need' if several else 'needs'} "
            f"{', '.join(missing)}, not installed. Install: {install_hint(missing)}")


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "packages" and argv[1] in DISTROS:
        names = argv[2:] or list(PLATFORMS)
        missing = {s for name in names for s in check(name, optional=True).missing}
        pkgs, unknown = packages(missing, argv[1])
        print(" ".join(pkgs))
        if unknown:
            print(f"no package known for {', '.join(unknown)}: add them to SYSTEM_LIBS in {__file__}", file=sys.stderr)
            return 3
        return 0
    if argv and argv[0] == "check":
        bad = 0
        for name in argv[1:] or list(PLATFORMS):
            result = check(name, optional=True)
            line = (f"{name}: {len(result.system)} system libraries, all present" if result.ok else
                    f"{name}: missing {', '.join(result.missing or result.absent_files)}"
                    + (f" ({install_hint(result.missing)})" if result.missing else ""))
            print(line)
            bad |= not result.ok
        return int(bad)
    print(__doc__.split("\n\n")[-1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
