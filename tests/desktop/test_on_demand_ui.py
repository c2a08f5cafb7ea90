"""Models on demand in the desktop, against a real backend and the real demo container (issue 14).

The launch dialog sends load on request, idle time-out, pin and memory limit; the Deployments
table shows "unloaded (loads on request)" and the countdown to a TTL unload, and Pin / the idle
time-out go to the backend as PATCH; the Monitor marks and lists the unload an idle time-out
made; the playground offers the unloaded model and a send loads it.
"""

from __future__ import annotations

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetricsF
from PySide6.QtTest import QTest

from desktop import theme
from desktop.pages.launch_dialog import LaunchDialog
from tests.conftest import RUN_ID
from tests.desktop.conftest import SHOTS
from tests.support.deployments import launch_ready, wait_served

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _get(live_backend, dep_id: str) -> dict:
    url, token = live_backend
    r = httpx.get(f"{url}/api/deployments/{dep_id}", headers=_h(token), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _patch(live_backend, dep_id: str, body: dict) -> dict:
    url, token = live_backend
    r = httpx.patch(f"{url}/api/deployments/{dep_id}", headers=_h(token), json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _unload(live_backend, dep_id: str, qtbot) -> None:
    url, token = live_backend
    r = httpx.post(f"{url}/api/deployments/{dep_id}/stop", headers=_h(token), timeout=60)
    assert r.status_code == 200, r.text
    qtbot.waitUntil(lambda: bool(_get(live_backend, dep_id).get("loads_on_request")), timeout=30000)


def _show(window, page) -> None:
    window.show_page(window.pages.index(page))


@pytest.fixture(scope="module")
def on_demand_model(live_backend):
    """(id, served name) of a ready demo deployment launched with on_demand (no idle time-out); removed after."""
    url, token = live_backend
    name = f"t{RUN_ID}-ondemand"
    dep = launch_ready(url, token, {"recipe": "demo", "model": "demo-tiny", "served_name": name,
                                    "on_demand": True, "idle_ttl_s": 0, "pinned": False,
                                    "env": {"DEMO_TOKEN_DELAY": "0.01"}})
    wait_served(url, token, name)
    yield dep["id"], name
    httpx.delete(f"{url}/api/deployments/{dep['id']}", headers=_h(token), timeout=60)


def test_launch_dialog_sends_load_on_request_idle_time_out_pin_and_memory_limit(make_main_window, qtbot,
                                                                                  live_backend, engine):
    window = make_main_window()
    qtbot.waitUntil(lambda: any(c.recipe["name"] == "demo" for c in window.models.cards), timeout=10000)
    card = next(c for c in window.models.cards if c.recipe["name"] == "demo")
    qtbot.mouseClick(card.launch_button, Qt.MouseButton.LeftButton)
    dialog: LaunchDialog = window.models._dialogs[-1]
    assert QTest.qWaitForWindowExposed(dialog)
    assert dialog.on_demand.isChecked() and not dialog.pinned.isChecked()  # the defaults
    assert dialog.idle_ttl.value() is None and dialog.mem_limit.text() == ""
    name = f"t{RUN_ID}-od-dialog"
    dialog.served.setText(name)
    dialog.mem_limit.setText("2 cups")
    assert dialog.mem_limit_error.isVisible() and not dialog.launch_button.isEnabled()
    dialog.mem_limit.setText("512m")
    assert not dialog.mem_limit_error.isVisible() and dialog.launch_button.isEnabled()
    dialog.idle_ttl.choice.setCurrentIndex(dialog.idle_ttl.choice.findData("minutes"))
    dialog.idle_ttl.minutes.setValue(7)
    dialog.pinned.setChecked(True)
    assert not dialog.idle_ttl.isEnabled()  # a pinned model is never unloaded: no time-out to set
    dialog.pinned.setChecked(False)
    dialog.grab().save(f"{SHOTS}/on-demand-launch-dialog.png")
    with qtbot.waitSignal(dialog.launched, timeout=60000) as launched:
        qtbot.mouseClick(dialog.launch_button, Qt.MouseButton.LeftButton)
    dep_id = launched.args[0]
    try:
        qtbot.waitUntil(lambda: bool(_get(live_backend, dep_id).get("container_id")), timeout=60000)
        dep = _get(live_backend, dep_id)  # read back from the container's labels
        assert (dep["on_demand"], dep["idle_ttl_s"], dep["pinned"]) == (True, 420, False), dep
        container = engine.client.containers.get(dep["container_id"])
        assert container.attrs["HostConfig"]["Memory"] == 512 * 2**20
    finally:
        dialog.close()
        url, token = live_backend
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=_h(token), timeout=60)


def test_table_shows_the_countdown_then_unloaded_and_pin_and_time_out_go_to_the_backend(
        make_main_window, qtbot, live_backend, on_demand_model):
    dep_id, name = on_demand_model
    _patch(live_backend, dep_id, {"idle_ttl_s": 600, "pinned": False, "on_demand": True})
    window = make_main_window()
    page = window.deployments
    _show(window, page)

    def status() -> str:
        row = page.rows.find(dep_id)
        return row.status_text() if row else ""

    # A request sets the idle clock going: the row counts down to the unload.
    url, token = live_backend
    r = httpx.post(f"{url}/v1/chat/completions", headers=_h(token), timeout=60,
                   json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    qtbot.waitUntil(lambda: status() in ("Ready · unloads in 10 min", "Ready · unloads in 9 min"), timeout=15000)
    assert page.select(dep_id)
    tip = page.model.data(page.model.index(page.rows.ids().index(dep_id), 1), Qt.ItemDataRole.ToolTipRole)
    assert "On demand: loads on request · unloads when idle for 10 min" in tip, tip

    pin = page.actions_by_key["pin"]
    qtbot.waitUntil(pin.isEnabled, timeout=5000)
    assert not pin.isChecked()
    pin.trigger()  # the toolbar button: checks it and sends PATCH {"pinned": true}
    qtbot.waitUntil(lambda: _get(live_backend, dep_id)["pinned"] is True, timeout=10000)
    qtbot.waitUntil(lambda: status() == "Ready · pinned" and pin.isChecked() and pin.text() == "Pinned",
                    timeout=10000)
    page.grab().save(f"{SHOTS}/on-demand-deployments-pinned.png")
    page.on_demand_menu.aboutToShow.emit()
    assert not any(a.isEnabled() for a in page.ttl_actions)  # pinned: no idle time-out applies
    pin.trigger()
    qtbot.waitUntil(lambda: _get(live_backend, dep_id)["pinned"] is False, timeout=10000)
    qtbot.waitUntil(lambda: page.rows.find(dep_id).data["pinned"] is False and not pin.isChecked(), timeout=10000)

    # The On demand menu: an idle time-out preset, and load on request off and on again.
    page.on_demand_menu.aboutToShow.emit()
    preset = next(a for a in page.ttl_actions if a.text() == "After 5 min")
    preset.trigger()
    qtbot.waitUntil(lambda: _get(live_backend, dep_id)["idle_ttl_s"] == 300, timeout=10000)
    qtbot.waitUntil(lambda: page.rows.find(dep_id).data["idle_ttl_s"] == 300, timeout=10000)  # refreshed
    page.on_demand_menu.aboutToShow.emit()  # the menu shows what the backend says now
    assert next(a for a in page.ttl_actions if a.isChecked()).text() == "After 5 min"
    assert page.load_on_request_action.isChecked()
    page.load_on_request_action.trigger()  # was on: off
    qtbot.waitUntil(lambda: _get(live_backend, dep_id)["on_demand"] is False, timeout=10000)
    page.load_on_request_action.trigger()
    qtbot.waitUntil(lambda: _get(live_backend, dep_id)["on_demand"] is True, timeout=10000)

    _unload(live_backend, dep_id, qtbot)
    qtbot.waitUntil(lambda: status() == "Unloaded (loads on request)", timeout=10000)
    row = page.rows.ids().index(dep_id)
    assert page.model.data(page.model.index(row, 1), Qt.ItemDataRole.ForegroundRole) == theme.color("info")
    tip = page.model.data(page.model.index(row, 1), Qt.ItemDataRole.ToolTipRole)
    assert "Last unload at " in tip and "Last load at " in tip, tip
    assert "of host memory (" in tip, tip  # what it counts as needing when models are swapped, and why
    page.grab().save(f"{SHOTS}/on-demand-deployments-unloaded.png")


def test_monitor_marks_and_lists_the_unload_an_idle_time_out_made(make_main_window, qtbot, live_backend,
                                                                 on_demand_model):
    dep_id, name = on_demand_model
    url, token = live_backend
    _patch(live_backend, dep_id, {"idle_ttl_s": 0, "pinned": False, "on_demand": True})
    if not _get(live_backend, dep_id).get("ready"):  # load it (a request does) and let it serve one
        r = httpx.post(f"{url}/v1/chat/completions", headers=_h(token), timeout=120,
                       json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 200, r.text
    window = make_main_window()
    monitor = window.monitor
    _show(window, monitor)
    qtbot.waitUntil(lambda: monitor.store.latest_time is not None, timeout=15000)
    before = monitor.events.last_seq
    _patch(live_backend, dep_id, {"idle_ttl_s": 2})  # idle now: unloaded about 2 s later

    def unload_listed():
        return next((e for e in monitor.events.events
                     if e.seq > before and e.kind == "unload" and e.deployment_id == dep_id), None)

    event = None
    qtbot.waitUntil(lambda: bool(unload_listed()), timeout=30000)
    event = unload_listed()
    assert event.data["trigger"] == "ttl" and "idle" in event.data["reason"], event.data
    rows = [[monitor.events_list.topLevelItem(i).text(c) for c in range(4)]
            for i in range(monitor.events_list.topLevelItemCount())]
    assert [name, "unloaded", event.data["reason"]] in [r[1:] for r in rows], rows
    assert not monitor.no_events.isVisible()
    # Marked on the host charts (every deployment's events) at the event's time, with the reason on hover.
    qtbot.waitUntil(lambda: any(ev.seq == event.seq for _, ev in monitor.cpu_chart.marks()), timeout=10000)
    x = next(x for x, ev in monitor.cpu_chart.marks() if ev.seq == event.seq)
    assert f"Unload: {name} unloaded: {event.data['reason']}" in monitor.cpu_chart.tooltip_at(x)
    assert monitor.cpu_chart.tooltip_at(x + 40) == "" or str(event.seq) not in monitor.cpu_chart.tooltip_at(x + 40)
    # Its card (it ran within the last 15 minutes) says it is unloaded and loads on request, not just "not running".
    qtbot.waitUntil(lambda: dep_id in monitor.cards and not monitor.store.deployments[dep_id].present, timeout=15000)
    qtbot.waitUntil(lambda: monitor.cards[dep_id].state_label.text() == "<i>unloaded (loads on request)</i>",
                    timeout=10000)
    monitor.grab().save(f"{SHOTS}/on-demand-monitor.png")
    row = next(monitor.events_list.topLevelItem(i) for i in range(monitor.events_list.topLevelItemCount())
               if monitor.events_list.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole) == event.seq)
    assert row.foreground(2).color() == theme.color("info")
    theme.apply("dark")
    try:
        assert row.foreground(2).color() == theme.color("info")  # the dark palette's, not the light one's
        monitor.grab().save(f"{SHOTS}/on-demand-monitor-dark.png")
    finally:
        theme.apply("light")
    _patch(live_backend, dep_id, {"idle_ttl_s": 0})


def test_playground_offers_the_unloaded_model_and_a_send_loads_it(make_main_window, qtbot, live_backend,
                                                                  on_demand_model):
    dep_id, name = on_demand_model
    _patch(live_backend, dep_id, {"idle_ttl_s": 0, "pinned": False, "on_demand": True})
    if _get(live_backend, dep_id).get("ready"):
        _unload(live_backend, dep_id, qtbot)
    window = make_main_window()
    page = window.playground
    _show(window, page)
    column = page.columns[0]
    label = f"{name} (unloaded — loads on request)"
    qtbot.waitUntil(lambda: column.model_combo.findText(label) >= 0, timeout=15000)
    column.select_model(name)
    assert column.model() == name and column.model_combo.currentText() == label and column.model_is_unloaded()
    page.max_tokens_spin.setValue(8)
    page.prompt_edit.setPlainText("Wake up.")
    with qtbot.waitSignal(page.send_finished, timeout=120000):
        page.send()
        assert column.metrics_label.text() == f"loading {name} on request, then the first token… 0 s"
    assert not column.error_label.isVisible(), column.error_label.text()
    turn = column.transcript.turns[-1]
    assert turn.model == name and turn.content and turn.error is None
    assert "loading" not in column.metrics_label.text() and not column._loading_timer.isActive()
    assert _get(live_backend, dep_id)["ready"]
    # The page asks for the models again after a reply from a model that was unloaded: ready now, its plain name.
    qtbot.waitUntil(lambda: column.model_combo.findText(name) >= 0 and column.model() == name, timeout=15000)


def test_deployments_toolbar_keeps_every_button_in_a_narrow_window(qtbot):
    """With Pin and On demand the labelled toolbar is wider than a narrow window: it shows icons alone
    (names in tooltips) instead of hiding the last buttons behind its overflow arrow, and labels again when wide."""
    from desktop.client import BackendClient
    from desktop.pages.deployments import DeploymentsPage

    page = DeploymentsPage(BackendClient("http://127.0.0.1:9", "unused"))  # nothing answers: no rows, no matter
    qtbot.addWidget(page)
    with qtbot.waitExposed(page):
        page.resize(1400, 500)
        page.show()
    qtbot.waitUntil(lambda: page.toolbar.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    page.resize(800, 500)
    qtbot.waitUntil(lambda: page.toolbar.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonIconOnly)
    buttons = [page.toolbar.widgetForAction(a) for a in page.actions_by_key.values()]
    qtbot.waitUntil(lambda: all(b.isVisible() and b.geometry().right() <= page.toolbar.width() for b in buttons))
    assert page.actions_by_key["on_demand"].toolTip() == "Load on request, and when to unload it when idle"
    page.resize(1400, 500)
    qtbot.waitUntil(lambda: page.toolbar.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    page.shutdown()


def test_chart_marks_sit_at_the_event_time_and_say_why_on_hover(qtbot):
    """A MarkedLineChart puts each event of its deployment where its time falls on the axis; none on an empty chart."""
    from desktop.lifecycle import EventLog
    from desktop.monitor.series import RingSeries
    from desktop.widgets.chart import TimeWindow
    from desktop.widgets.marked_chart import MarkedLineChart

    log = EventLog()
    log.add({"events": [
        {"seq": 1, "at": "2027-01-15T08:00:00Z", "kind": "evict", "deployment_id": "a", "served_name": "a",
         "trigger": "eviction", "for_deployment": "big", "reason": "made room for 'big' on GPU 0"},
        {"seq": 2, "at": "2027-01-15T08:00:10Z", "kind": "load", "deployment_id": "b", "served_name": "b",
         "trigger": "request", "duration_s": 1.5, "reason": "a /v1/chat/completions request for 'b'"}], "last_seq": 2})
    at = log.events[0].at
    now = at + 30
    window = TimeWindow(span=60)
    series = RingSeries("cpu")
    for i in range(61):
        series.append(now - 60 + i, 10.0 + i % 7)
    chart = MarkedLineChart("CPU", window, lambda: now, events=log, deployment_id="a")
    chart.add_line(series, "cpu")
    qtbot.addWidget(chart)
    chart.resize(600, 200)
    with qtbot.waitExposed(chart):
        chart.show()
    marks = chart.marks()
    assert [ev.seq for _, ev in marks] == [1]  # only its own deployment's events
    x = marks[0][0]
    plot = chart._plot_rect(QFontMetricsF(chart.font()))
    assert abs(x - (plot.left() + 30 / 60 * plot.width())) < 0.5  # 30 s before the right edge of a 60 s window
    assert chart.tooltip_at(x + 3).endswith("Eviction: a evicted for big: made room for 'big' on GPU 0")
    assert chart.tooltip_at(x + 30) == ""
    chart.grab().save(f"{SHOTS}/on-demand-chart-marks.png")
    empty = MarkedLineChart("VRAM", window, lambda: now, events=log, deployment_id="a")
    nan = RingSeries("vram")
    for i in range(61):
        nan.append(now - 60 + i, None)
    empty.add_line(nan, "vram")
    qtbot.addWidget(empty)
    empty.resize(600, 200)
    assert empty.marks() == []  # "CPU-only: no VRAM" is not crossed out
