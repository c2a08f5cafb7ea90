"""The desktop's token is kept in an owner-only file, never in the settings file (ModelDeck.conf, 0644)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from PySide6.QtCore import QSettings

from desktop.settings_store import DesktopSettings, SettingsStore

SECRET = "tok-3f9a-never-in-the-conf"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_saved_token_lands_in_an_owner_only_file_not_in_the_settings_file(tmp_path):
    ini = tmp_path / "ModelDeck.conf"
    old_umask = os.umask(0o022)  # as on most desktops: QSettings' file comes out 0644
    try:
        store = SettingsStore(ini)
        store.save(DesktopSettings(backend_url="http://127.0.0.1:9999", token=SECRET))
    finally:
        os.umask(old_umask)
    assert SECRET not in ini.read_text(encoding="utf-8")
    assert "token" not in ini.read_text(encoding="utf-8")
    assert store.token_path == tmp_path / "ModelDeck.token"
    assert store.token_path.read_text(encoding="utf-8").strip() == SECRET
    assert _mode(store.token_path) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "the temporary file stayed behind"
    # A fresh store (the next start) reads it back.
    assert SettingsStore(ini).load().token == SECRET
    assert SettingsStore(ini).load().backend_url == "http://127.0.0.1:9999"


def test_a_changed_token_replaces_the_file_and_an_empty_one_removes_it(tmp_path):
    store = SettingsStore(tmp_path / "d.ini")
    store.save(DesktopSettings(token=SECRET))
    store.token_path.chmod(0o644)  # someone loosened it: the next save writes a fresh 0600 file
    store.save(DesktopSettings(token="second-token"))
    assert store.token_path.read_text(encoding="utf-8").strip() == "second-token"
    assert _mode(store.token_path) == 0o600
    store.save(DesktopSettings(token=""))
    assert not store.token_path.exists()
    assert store.load().token == ""


def test_a_token_an_earlier_version_left_in_the_settings_file_moves_to_the_owner_only_file(tmp_path):
    ini = tmp_path / "ModelDeck.conf"
    old = QSettings(str(ini), QSettings.Format.IniFormat)
    old.setValue("backend/url", "http://127.0.0.1:8765")
    old.setValue("backend/token", SECRET)
    old.setValue("ui/theme", "dark")
    old.sync()
    del old
    assert SECRET in ini.read_text(encoding="utf-8")

    loaded = SettingsStore(ini).load()
    assert loaded.token == SECRET
    assert loaded.theme == "dark"  # the rest of the file is untouched
    text = ini.read_text(encoding="utf-8")
    assert SECRET not in text and "token" not in text
    token_file = tmp_path / "ModelDeck.token"
    assert token_file.read_text(encoding="utf-8").strip() == SECRET
    assert _mode(token_file) == 0o600
    assert SettingsStore(ini).load().token == SECRET


def test_a_token_file_already_there_wins_over_a_stale_one_in_the_settings_file(tmp_path):
    ini = tmp_path / "ModelDeck.conf"
    store = SettingsStore(ini)
    store.save(DesktopSettings(token="current"))
    stale = QSettings(str(ini), QSettings.Format.IniFormat)
    stale.setValue("backend/token", "stale")
    stale.sync()
    del stale
    assert SettingsStore(ini).load().token == "current"
    assert "stale" not in ini.read_text(encoding="utf-8")
