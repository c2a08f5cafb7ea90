"""Models and Deployments pages against the real backend: launch with progress, actions, logs, errors."""

from __future__ import annotations

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from desktop.pages.launch_dialog import LaunchDialog, model_problem, parse_env, served_name_problem
from desktop.widgets.deployment_table import DeploymentRows, human_duration, parse_docker_time
from desktop.widgets.launch_progress import LaunchProgressView, LaunchTimeline
from tests.conftest import RUN_ID
from tests.desktop.conftest import SHOTS

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]


def _open_demo_dialog(window, qtbot) -> LaunchDialog:
    qtbot.waitUntil(lambda: any(c.recipe["name"] == "demo" for c in window.models.cards), timeout=10000)
    card = next(c for c in window.models.cards if c.recipe["name"] == "demo")
    qtbot.mouseClick(card.launch_button, Qt.MouseButton.LeftButton)
    dialog = window.models._dialogs[-1]
    assert QTest.qWaitForWindowExposed(dialog)  # the X server mapped it
    return dialog


def _row(window, served_name: str):
    return next((r for r in window.deployments.rows.rows if r.data.get("served_name") == served_name), None)


def _remove_via_api(live_backend, dep_id: str) -> None:
    url, token = live_backend
    httpx.delete(f"{url}/api/deployments/{dep_id}", headers={"Authorization": f"Bearer {token}"}, timeout=60)


# -- plain data, no window ------------------------------------------------------------


def test_deployment_rows_join_deployments_with_stats():
    rows = DeploymentRows()
    dep = {"id": "d1", "served_name": "tiny", "recipe": "demo", "model": "demo-tiny", "status": "ready",
           "state": "running", "ready": True, "host_port": 41000, "gpus": [], "container_id": "c",
           "started_at": "2026-01-01T00:00:00.123456789Z"}
    stopped = {**dep, "id": "d0", "served_name": "a-stopped", "status": "stopped", "state": "exited"}
    rows.set_deployments([dep, stopped], now=parse_docker_time(dep["started_at"]) + 3700)
    rows.set_stats({"deployments": {"d1": {"cpu_pct": 12.4, "mem_used_bytes": 50 * 2**20, "vram_bytes": None,
                                           "running_on_cpu": False}}},
                   now=parse_docker_time(dep["started_at"]) + 3700)
    assert rows.ids() == ["d0", "d1"]  # sorted by name
    assert rows.find("d1").cells() == ["tiny", "Ready", "demo", "demo-tiny", "CPU", "12 %", "50.0 MiB", "41000",
                                       "1 h 01 min"]
    assert rows.find("d0").cells()[5:] == ["—", "—", "41000", "—"]
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert human_duration(42) == "42 s" and human_duration(2 * 86400 + 7200) == "2 d 2 h"


def test_launch_timeline_folds_events():
    t = LaunchTimeline()
    t.add({"phase": "queued", "message": "Launching"})
    t.add({"phase": "pulling", "message": "Downloading", "overall_current": 50 * 2**20, "overall_total": 200 * 2**20})
    assert t.progress == (50 * 2**20, 200 * 2**20) and t.progress_text == "50.0 MiB of 200.0 MiB" and t.step == 0
    t.add({"phase": "building", "message": "Step 2/4", "current": 2, "total": 4})
    assert t.progress_text == "step 2 of 4"
    t.add({"phase": "loading", "message": "Waiting"})
    assert t.progress is None and t.step == 3
    t.add({"phase": "failed", "message": "exited", "details": {"exit_code": 2, "log_tail": ["boom"], "hint": "h"}})
    assert t.done and t.failure == {"message": "exited", "hint": "h", "exit_code": 2, "log_tail": ["boom"]}
    assert t.phases_seen == ["queued", "pulling", "building", "loading", "failed"]


def test_progress_view_renders_pull_progress_and_failure(qtbot):
    view = LaunchProgressView()
    qtbot.addWidget(view)
    view.resize(640, 360)
    view._on_stream_event("progress", {"phase": "queued", "message": "Launching"})
    assert view.bar.maximum() == 0  # busy until there is something to count
    view._on_stream_event("progress", {"phase": "pulling", "message": "Downloading 3f2a", "layer": "3f2a",
                                       "overall_current": 3 * 2**30, "overall_total": 4 * 2**30})
    assert view.bar.maximum() > 0 and 0.74 < view.bar.value() / view.bar.maximum() < 0.76
    assert "3.0 GiB of 4.0 GiB" in view.bar.format() and view.step_labels[0].text() == "● Pull image"
    view.grab().save(f"{SHOTS}/progress-pulling.png")
    with qtbot.waitSignal(view.finished) as finished:
        view._on_stream_event("progress", {"phase": "failed", "message": "No space left on device",
                                           "details": {"hint": "Free some disk.", "log_tail": []}})
    assert finished.args == ["failed"] and view.step_labels[0].property("step") == "failed"
    assert view.failure_hint.text() == "Free some disk."


def test_form_validation_rules():
    assert model_problem("Qwen/Qwen2.5-0.5B-Instruct") is None and model_problem("llama3.2:1b") is None
    assert model_problem("/models/my.gguf") is None
    assert "spaces" in model_problem("a b") and "'..'" in model_problem("../etc") and model_problem("x;rm")
    assert model_problem("") and served_name_problem("") is None and served_name_problem("-x")
    assert parse_env("A=1\n\n# note\nB=x=y") == ({"A": "1", "B": "x=y"}, None)
    assert parse_env("NOPE")[1] == "Environment line 1 is not KEY=VALUE."


# -- the pages against the backend ----------------------------------------------------


def test_launch_dialog_validates_as_you_type_and_checks_fit(make_main_window, qtbot):  # noqa: F811
    window = make_main_window()
    dialog = _open_demo_dialog(window, qtbot)
    assert dialog.model.text() == "demo-tiny" and dialog.served.placeholderText() == "demo"
    assert dialog.port_auto.isChecked() and not dialog.port.isEnabled()
    assert not dialog.gpu.isEnabled()  # the demo runs on the CPU
    qtbot.waitUntil(lambda: dialog.fit.property("level") == "ok", timeout=10000)
    dialog.model.setText("demo tiny")
    assert dialog.model_error.isVisible() and not dialog.launch_button.isEnabled()
    dialog.model.setText("demo-tiny")
    assert not dialog.model_error.isVisible() and dialog.launch_button.isEnabled()
    dialog.port_auto.setChecked(False)
    dialog.port.setText("80")
    assert dialog.request_body() == (None, "Give a port from 1024 to 65535, or tick Automatic.")
    dialog.port.setText("40123")
    dialog.advanced_toggle.setChecked(True)
    dialog.args.setPlainText("--token-delay\n0.01\n")
    dialog.env.setPlainText("DEMO_TOKEN_DELAY=0.01")
    body, problem = dialog.request_body()
    assert problem is None
    assert body == {"recipe": "demo", "model": "demo-tiny", "env": {"DEMO_TOKEN_DELAY": "0.01"},
                    "args": ["--token-delay", "0.01"], "port": 40123}
    dialog.grab().save(f"{SHOTS}/launch-dialog-form.png")


def test_backend_error_on_launch_is_shown_and_form_keeps_values(make_main_window, qtbot):  # noqa: F811
    window = make_main_window()
    dialog = _open_demo_dialog(window, qtbot)
    dialog.served.setText(f"t{RUN_ID}-refused")
    dialog.advanced_toggle.setChecked(True)
    dialog.env.setPlainText("LD_PRELOAD=/tmp/x.so")
    qtbot.mouseClick(dialog.launch_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.error.isVisible(), timeout=10000)
    assert "LD_PRELOAD" in dialog.error.text()
    assert dialog.pages.currentIndex() == 0 and dialog.launch_button.isEnabled()
    assert dialog.served.text() == f"t{RUN_ID}-refused" and dialog.env.toPlainText() == "LD_PRELOAD=/tmp/x.so"


@pytest.mark.slow
def test_launch_with_bad_argument_shows_failure_and_log_tail(make_main_window, qtbot, live_backend):  # noqa: F811
    window = make_main_window()
    dialog = _open_demo_dialog(window, qtbot)
    dialog.served.setText(f"t{RUN_ID}-badarg")
    dialog.advanced_toggle.setChecked(True)
    dialog.args.setPlainText("--no-such-flag")
    with qtbot.waitSignal(dialog.progress.finished, timeout=120000) as finished:
        qtbot.mouseClick(dialog.launch_button, Qt.MouseButton.LeftButton)
    try:
        assert finished.args == ["failed"]
        view = dialog.progress
        assert view.failure_title.isVisible() and "Launch failed" in view.failure_title.text()
        assert "unrecognized arguments: --no-such-flag" in view.log_tail.toPlainText()
        assert view.failure_hint.text() and dialog.edit_button.isVisible()
        assert [s.property("step") for s in view.step_labels][:4] == ["done", "done", "done", "failed"]
        dialog.resize(760, 560)
        dialog.grab().save(f"{SHOTS}/launch-dialog-failed.png")
        qtbot.mouseClick(dialog.edit_button, Qt.MouseButton.LeftButton)
        assert dialog.pages.currentIndex() == 0 and dialog.args.toPlainText() == "--no-such-flag"
    finally:
        _remove_via_api(live_backend, dialog.deployment_id)


@pytest.mark.slow
def test_launch_to_ready_row_then_stop_start_logs_copy_export_remove(make_main_window, qtbot, tmp_path,  # noqa: F811
                                                                     monkeypatch, live_backend):
    window = make_main_window()
    name = f"t{RUN_ID}-gui"
    dialog = _open_demo_dialog(window, qtbot)
    dialog.served.setText(name)
    with qtbot.waitSignal(dialog.launched, timeout=30000) as launched:
        qtbot.mouseClick(dialog.launch_button, Qt.MouseButton.LeftButton)
    dep_id = launched.args[0]
    try:
        assert dialog.pages.currentWidget() is dialog.progress
        qtbot.waitUntil(lambda: dialog.progress.timeline.phase == "ready", timeout=120000)
        seen = dialog.progress.timeline.phases_seen
        assert {"creating", "starting", "loading", "ready"} <= set(seen), seen
        assert seen.index("creating") < seen.index("starting") < seen.index("ready")
        assert all(s.property("step") == "done" for s in dialog.progress.step_labels)
        dialog.grab().save(f"{SHOTS}/launch-dialog-ready.png")
        qtbot.mouseClick(dialog.show_button, Qt.MouseButton.LeftButton)
        assert window.stack.currentWidget() is window.deployments

        page = window.deployments
        qtbot.waitUntil(lambda: (r := _row(window, name)) is not None and r.status == "ready", timeout=30000)
        assert page.select(dep_id)
        model_row = page.rows.ids().index(dep_id)
        assert page.model.data(page.model.index(model_row, 1)) == "Ready"
        assert page.actions_by_key["stop"].isEnabled() and not page.actions_by_key["start"].isEnabled()

        page.actions_by_key["stop"].trigger()
        qtbot.waitUntil(lambda: _row(window, name).status == "stopped", timeout=60000)
        page.select(dep_id)
        assert page.actions_by_key["start"].isEnabled() and not page.actions_by_key["stop"].isEnabled()
        page.actions_by_key["start"].trigger()
        qtbot.waitUntil(lambda: _row(window, name).status == "ready", timeout=60000)

        page.select(dep_id)
        logs = page.open_logs()
        assert QTest.qWaitForWindowExposed(logs)  # the X server mapped it
        qtbot.waitUntil(lambda: logs.lines_received > 0 and bool(logs.text()), timeout=15000)
        logs.search.setText("GET")
        logs.close()

        page.select(dep_id)
        page.actions_by_key["copy"].trigger()
        assert QApplication.clipboard().text() == f"base_url: {window.client.base_url}/v1\nmodel: {name}"

        target = tmp_path / "compose.yml"
        monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
        page.actions_by_key["export"].trigger()
        qtbot.waitUntil(target.exists, timeout=10000)
        assert "services:" in target.read_text()

        asked: list[str] = []

        def yes(_parent, title, *_args, **_kw):
            asked.append(title)
            return QMessageBox.StandardButton.Yes

        monkeypatch.setattr(QMessageBox, "question", staticmethod(yes))
        page.select(dep_id)
        page.actions_by_key["remove"].trigger()
        assert asked == [f"Remove {name}?"]
        qtbot.waitUntil(lambda: _row(window, name) is None, timeout=60000)
        dep_id = None
    finally:
        if dep_id:
            _remove_via_api(live_backend, dep_id)


def test_logs_dialog_follows_and_highlights(make_main_window, qtbot, demo_model):  # noqa: F811
    window = make_main_window()
    window.show_page(window.pages.index(window.deployments))
    page = window.deployments
    qtbot.waitUntil(lambda: _row(window, demo_model) is not None, timeout=15000)
    assert page.select(_row(window, demo_model).id)
    logs = page.open_logs()
    assert QTest.qWaitForWindowExposed(logs)  # the X server mapped it
    qtbot.waitUntil(lambda: logs.lines_received > 0 and bool(logs.text()), timeout=15000)
    first = logs.text().splitlines()[0]
    word = next(w for w in first.split() if len(w) > 3)
    logs.search.setText(word)
    assert logs._highlight(word) >= 1 and "match" in logs.matches.text()
    logs.pause.setChecked(True)
    assert "Paused" in logs.state.text()
    logs.pause.setChecked(False)
    logs.grab().save(f"{SHOTS}/logs-dialog.png")
    logs.close()
