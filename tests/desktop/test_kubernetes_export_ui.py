"""Deployments page → "Export Kubernetes…": a real window, a real backend, the real demo container.

The button sits beside "Export compose", is enabled only for a deployment with a container, asks
where to save, and writes the backend's manifests there (checked here by parsing them and by the
schema validator the backend tests use); a refusal from the backend is shown, not swallowed.
"""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tests.conftest import RUN_ID

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]


def _row(window, served_name: str):
    return next((r for r in window.deployments.rows.rows if r.data.get("served_name") == served_name), None)


def _page_with_demo(make_main_window, qtbot, demo_model):
    window = make_main_window()
    window.show_page(window.pages.index(window.deployments))
    page = window.deployments
    qtbot.waitUntil(lambda: _row(window, demo_model) is not None, timeout=15000)
    return window, page


def test_export_kubernetes_saves_the_manifests(make_main_window, qtbot, demo_model, tmp_path, monkeypatch):
    window, page = _page_with_demo(make_main_window, qtbot, demo_model)
    action = page.actions_by_key["export_k8s"]
    assert action.text() == "Export Kubernetes…"
    toolbar = page.toolbar.actions()
    assert toolbar.index(action) == toolbar.index(page.actions_by_key["export"]) + 1, "beside Export compose"
    page.table.clearSelection()
    assert not action.isEnabled(), "nothing selected: nothing to export"

    dep_id = _row(window, demo_model).id
    assert page.select(dep_id)
    assert action.isEnabled()
    target = tmp_path / "out" / "demo-kubernetes.yaml"
    target.parent.mkdir()
    offered: list[str] = []

    def save_as(_parent, _title, suggested, _filter, *_a, **_k):
        offered.append(suggested)
        return str(target), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_as))
    said: list[str] = []
    page.message.connect(said.append)
    action.trigger()
    qtbot.waitUntil(lambda: target.exists() and bool(said), timeout=15000)

    assert offered and offered[0].endswith(f"{dep_id}-kubernetes.yaml")
    assert said[-1].startswith(f"Saved {target}")
    docs = list(yaml.safe_load_all(target.read_text(encoding="utf-8")))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    deployment = docs[0]
    assert deployment["metadata"]["annotations"]["modeldeck/served-name"] == demo_model
    assert deployment["metadata"]["namespace"] == "default"


def test_cancelled_save_writes_nothing(make_main_window, qtbot, demo_model, tmp_path, monkeypatch):
    window, page = _page_with_demo(make_main_window, qtbot, demo_model)
    assert page.select(_row(window, demo_model).id)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: ("", "")))
    requested: list[str] = []
    real_get = page._calls.get
    monkeypatch.setattr(page._calls, "get", lambda path, *a, **k: (requested.append(path), real_get(path, *a, **k)))
    before = set(tmp_path.rglob("*"))
    page.actions_by_key["export_k8s"].trigger()
    assert requested == [], "no save path: the backend is not even asked"
    assert set(tmp_path.rglob("*")) == before


def test_a_refused_export_is_shown(make_main_window, qtbot, demo_model, tmp_path, monkeypatch):
    """The backend's 404 (the deployment went away meanwhile) reaches the person as a warning, nothing is written."""
    window, page = _page_with_demo(make_main_window, qtbot, demo_model)
    assert page.select(_row(window, demo_model).id)  # enables the action
    gone = {**_row(window, demo_model).data, "id": f"t{RUN_ID}-gone-meanwhile"}
    monkeypatch.setattr(page, "selected", lambda: gone)
    target = tmp_path / "never.yaml"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    warnings: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning",
                        staticmethod(lambda _p, title, text, *_a, **_k: warnings.append((title, text))))
    page.actions_by_key["export_k8s"].trigger()
    qtbot.waitUntil(lambda: bool(warnings), timeout=15000)
    assert warnings[0][0] == "Could not export"
    assert f"t{RUN_ID}-gone-meanwhile" in warnings[0][1]
    assert not target.exists()
