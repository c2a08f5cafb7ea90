"""The backend and the desktop name the same default home folder (one platformdirs rule, asked on each side)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import backend.settings as backend_settings
import desktop.settings_store as desktop_settings

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the folders asserted are Linux's")


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path


def both() -> Path:
    answers = backend_settings.default_home(), desktop_settings.default_home()
    assert answers[0] == answers[1], f"backend and desktop disagree: {answers}"
    return answers[0]


def test_same_name_and_flags_on_both_sides():
    assert backend_settings.APP_DIR_NAME == desktop_settings.APP_DIR_NAME


@linux_only
@pytest.mark.parametrize(("xdg", "expected"), [
    (None, ".config/modeldeck"),
    ("", ".config/modeldeck"),
    ("{home}/elsewhere", "elsewhere/modeldeck"),
    # The XDG base-directory spec says a relative value is invalid and is to be ignored.
    ("relative/config", ".config/modeldeck"),
])
def test_linux_folders_stay_where_users_have_them(home, monkeypatch, xdg, expected):
    # The answers the hand-written rule gave before platformdirs (~/.config/modeldeck,
    # $XDG_CONFIG_HOME/modeldeck): a person's token and history do not move.
    if xdg is not None:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg.format(home=home))
    assert both() == home / expected


@linux_only
def test_macos_keeps_the_folder_earlier_versions_made(home, monkeypatch):
    # platformdirs honours $XDG_CONFIG_HOME on macOS; a folder already in Application Support wins.
    mac = SimpleNamespace(platform="darwin")
    monkeypatch.setattr(backend_settings, "sys", mac)
    monkeypatch.setattr(desktop_settings, "sys", mac)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    assert both() == home / "xdg" / "modeldeck", "no earlier folder: the platformdirs answer"
    legacy = home / "Library" / "Application Support" / "modeldeck"
    legacy.mkdir(parents=True)
    assert both() == legacy
    (home / "xdg" / "modeldeck").mkdir(parents=True)
    assert both() == home / "xdg" / "modeldeck", "a folder where platformdirs points is used once it exists"
