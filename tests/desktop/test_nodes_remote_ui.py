"""The pages with a second machine attached (issue 17): a real node (tests/support/remote_node.py) added to a
backend of this module's own, a demo model running on it; the Deployments page, the Monitor, the Launch dialog
and the playground show it."""

from __future__ import annotations

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QGroupBox, QScrollArea

from backend.app import create_app
from backend.settings import Settings
from desktop import theme
from desktop.monitor.store import HOST_CPU
from desktop.nodes import ALL_NODES, AUTOMATIC, LOCAL
from desktop.widgets.deployment_table import NODE_COLUMN
from tests.conftest import RUN_ID, RUN_LABEL
from tests.desktop.conftest import SHOTS, TOKEN
from tests.support.deployments import launch_ready
from tests.support.live_server import serve
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]

NODE = "gpu-box"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def fleet(engine, demo_base_image, tmp_path_factory, remote_node):
    """(url, served name on the node): a backend with ``remote_node`` added as NODE (its key trusted through
    the API, as the Settings page does it) and a ready demo launched there."""
    settings = Settings(home=tmp_path_factory.mktemp("fleet-home"), token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        body = {"name": NODE, "transport": "ssh", "remote_home": str(remote_node.remote_home),
                "ssh": {"host": remote_node.ip, "user": remote_node.user, "identity_file": str(remote_node.client_key)}}
        r = httpx.post(f"{url}/api/nodes", json=body, headers=AUTH, timeout=120)
        assert r.status_code == 409 and r.json()["error"]["code"] == "host_key_unknown", r.text
        fingerprint = r.json()["error"]["details"]["fingerprint"]
        assert fingerprint == remote_node.host_key_fingerprint
        r = httpx.post(f"{url}/api/nodes/{NODE}/trust", json={"fingerprint": fingerprint}, headers=AUTH, timeout=120)
        assert r.status_code == 200 and r.json()["state"] == "connected", r.text
        served = f"t{RUN_ID}-remote"
        dep = launch_ready(url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": served,
                                        "node": NODE}, timeout=180)
        assert dep["node"] == NODE and dep["id"].endswith(f"@{NODE}")
        yield url, served
        httpx.delete(f"{url}/api/deployments/{dep['id']}", headers=AUTH, timeout=60)
        httpx.delete(f"{url}/api/nodes/{NODE}", headers=AUTH, timeout=60)


def test_the_deployments_page_shows_the_node_and_filters_by_it(make_main_window, qtbot, fleet):
    url, served = fleet
    window = make_main_window(url=url, token=TOKEN)
    window.show_page(window.pages.index(window.deployments))
    page = window.deployments

    def remote_row():
        return next((i for i, r in enumerate(page.rows.rows) if r.data.get("served_name") == served), None)

    qtbot.waitUntil(lambda: remote_row() is not None, timeout=30000)
    assert page.model.data(page.model.index(remote_row(), NODE_COLUMN)) == NODE
    qtbot.waitUntil(lambda: page.node_filter.findData(NODE) >= 0, timeout=10000)
    page.node_filter.setCurrentIndex(page.node_filter.findData(LOCAL))
    assert remote_row() is None
    page.node_filter.setCurrentIndex(page.node_filter.findData(NODE))
    assert [r.node for r in page.rows.rows] == [NODE] * len(page.rows.rows) and remote_row() is not None
    page.node_filter.setCurrentIndex(page.node_filter.findData(ALL_NODES))
    assert remote_row() is not None
    page.node_filter.setCurrentIndex(page.node_filter.findData(NODE))  # the picture: the node's deployments
    qtbot.waitUntil(lambda: remote_row() is not None, timeout=10000)
    for scheme in ("light", "dark"):
        theme.apply(scheme)
        QApplication.processEvents()  # the new style applied; grab() paints the window anew
        window.grab().save(f"{SHOTS}/{scheme}-deployments-nodes.png")
    theme.apply("light")


def test_settings_lists_the_node_connected_with_its_figures(make_main_window, qtbot, fleet):
    url, _served = fleet
    window = make_main_window(url=url, token=TOKEN)
    page = window.settings_page
    window.show_page(window.pages.index(page))
    section = page.nodes
    qtbot.waitUntil(lambda: section.select(NODE), timeout=20000)
    row = next(r for r in range(section.table.rowCount()) if section.table.item(r, 0).text() == NODE)
    cells = [section.table.item(row, c).text() for c in range(section.table.columnCount())]
    assert cells[2] == "Connected" and cells[3].endswith("ms") and cells[4].startswith("Docker")
    assert cells[6] == "1"  # the demo launched there
    assert section.test_button.isEnabled() and section.remove_button.isEnabled()
    group = page.findChild(QGroupBox, "nodesGroup")
    scroll = page.findChild(QScrollArea)
    scroll.ensureWidgetVisible(group)
    for scheme in ("light", "dark"):
        theme.apply(scheme)
        QApplication.processEvents()  # the new style applied; grab() paints the window anew
        window.grab().save(f"{SHOTS}/{scheme}-settings-nodes.png")
    theme.apply("light")


def test_the_monitor_charts_a_node_from_its_own_stats(make_main_window, qtbot, fleet):
    url, served = fleet
    window = make_main_window(url=url, token=TOKEN)
    monitor = window.monitor
    window.show_page(window.pages.index(monitor))  # its first show starts it
    qtbot.waitUntil(lambda: monitor.node_combo.findData(NODE) >= 0, timeout=20000)
    monitor.node_combo.setCurrentIndex(monitor.node_combo.findData(NODE))
    assert monitor.node == NODE and not monitor.events_box.isVisibleTo(monitor)
    qtbot.waitUntil(lambda: len(monitor.store.get(HOST_CPU)) >= 2, timeout=20000)  # polled from the node
    assert monitor.cpu_chart.point_count() >= 2 and not monitor.streams()
    # The node's demo deployment gets its card, named by the served name.
    qtbot.waitUntil(lambda: any(served in c.name_label.text() for c in monitor.cards.values()), timeout=30000)
    monitor.node_combo.setCurrentIndex(monitor.node_combo.findData(LOCAL))
    assert monitor.node == LOCAL and not any(served in c.name_label.text() for c in monitor.cards.values())
    qtbot.waitUntil(lambda: monitor.streams() != [], timeout=20000)


def test_the_launch_dialog_offers_each_machine_with_its_free_memory(make_main_window, qtbot, fleet):
    url, _served = fleet
    window = make_main_window(url=url, token=TOKEN)
    qtbot.waitUntil(lambda: any(c.recipe["name"] == "demo" for c in window.models.cards), timeout=20000)
    card = next(c for c in window.models.cards if c.recipe["name"] == "demo")
    qtbot.mouseClick(card.launch_button, Qt.MouseButton.LeftButton)
    dialog = window.models._dialogs[-1]
    qtbot.waitUntil(lambda: dialog.node.findData(NODE) >= 0, timeout=20000)
    assert [dialog.node.itemData(i) for i in range(dialog.node.count())] == [LOCAL, NODE, AUTOMATIC]
    assert dialog.node.isVisible()
    qtbot.waitUntil(lambda: NODE in dialog.placement.text() and "This machine" in dialog.placement.text(),
                    timeout=60000)
    lines = dialog.placement.text().splitlines()
    assert len(lines) >= 2 and all("free" in line for line in lines), lines
    assert lines[0].startswith("▶ This machine")
    body, problem = dialog.request_body()
    assert problem is None and "node" not in body  # this machine: the body as before issue 17
    dialog.node.setCurrentIndex(dialog.node.findData(NODE))
    assert dialog.request_body()[0]["node"] == NODE and not dialog.gpu.isEnabled()
    assert any(line.startswith("▶ " + NODE) for line in dialog.placement.text().splitlines())
    dialog.node.setCurrentIndex(dialog.node.findData(AUTOMATIC))
    assert dialog.request_body()[0]["node"] == AUTOMATIC
    dialog.grab().save(f"{SHOTS}/launch-nodes.png")
    dialog.reject()


def test_the_playground_lists_the_node_model_like_any_other(make_main_window, qtbot, fleet):
    url, served = fleet
    wait_until(lambda: served in [m["id"] for m in httpx.get(f"{url}/v1/models", headers=AUTH, timeout=30)
                                  .json()["data"]], 30, what=f"/v1/models to list {served}")
    window = make_main_window(url=url, token=TOKEN)
    page = window.playground
    page.refresh_models()
    qtbot.waitUntil(lambda: served in page._models, timeout=30000)
    column = page.columns[0]
    column.select_model(served)
    assert column.model() == served
