"""scripts/install-desktop-entry installs the menu entry and icons for the current user (into a tmp HOME here)."""

from __future__ import annotations

import os
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-desktop-entry"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def install(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XDG_DATA_HOME"} | {"HOME": str(home)}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def entry_of(home: Path) -> dict[str, str]:
    text = (home / ".local/share/applications/modeldeck.desktop").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_committed_icons_have_every_size():
    for size in SIZES:
        assert png_size(ROOT / f"assets/icons/hicolor/{size}x{size}/apps/modeldeck.png") == (size, size)
    assert (ROOT / "assets/icons/modeldeck.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"


def test_installs_entry_and_icons_pointing_at_something_runnable(tmp_path):
    if not (ROOT / "dist/modeldeck/modeldeck").exists() and not (ROOT / ".venv/bin/modeldeck").exists():
        skip_or_fail("neither the bundle nor the virtualenv's modeldeck is there to point at")
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    entry = entry_of(tmp_path)
    program = shlex.split(entry["Exec"])[0]
    assert Path(program).is_absolute() and os.access(program, os.X_OK), entry["Exec"]
    assert program in (str(ROOT / "dist/modeldeck/modeldeck"), str(ROOT / ".venv/bin/modeldeck"))
    assert entry["Icon"] == "modeldeck" and entry["StartupWMClass"] == "ModelDeck"
    assert entry["Categories"] == "Development;Utility;"
    icons = tmp_path / ".local/share/icons/hicolor"
    for size in SIZES:
        assert png_size(icons / f"{size}x{size}/apps/modeldeck.png") == (size, size)
    assert (icons / "scalable/apps/modeldeck.svg").exists()


def test_exec_override_is_quoted_and_uninstall_removes_everything(tmp_path):
    program = tmp_path / "my apps" / "model$deck"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    home = tmp_path / "home"
    result = install(home, "--exec", str(program))
    assert result.returncode == 0, result.stderr
    assert entry_of(home)["Exec"] == '"' + str(program).replace("$", "\\\\$") + '"'
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", "--no-hints",
                                str(home / ".local/share/applications/modeldeck.desktop")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert install(home, "--uninstall").returncode == 0
    left = [p for p in home.rglob("*") if p.is_file() and p.name.startswith("modeldeck")]
    assert left == []


def test_refuses_a_program_that_cannot_run(tmp_path):
    result = install(tmp_path, "--exec", str(tmp_path / "nothing-here"))
    assert result.returncode != 0
    assert not (tmp_path / ".local/share/applications/modeldeck.desktop").exists()
