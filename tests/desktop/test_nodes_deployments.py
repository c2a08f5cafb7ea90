"""The Deployments page's Node column and node filter (issue 17)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from desktop.nodes import ALL_NODES, LOCAL
from desktop.widgets.deployment_table import COLUMNS, NODE_COLUMN, DeploymentRows

pytestmark = pytest.mark.gui


def _deps():
    return [{"id": "a1", "served_name": "alpha", "status": "ready", "state": "running"},
            {"id": "b2@gpu-box", "served_name": "beta", "status": "ready", "state": "running", "node": "gpu-box"},
            {"id": "c3", "served_name": "gamma", "status": "stopped", "state": "exited", "node": "local"}]


def test_rows_know_their_node_and_the_filter_keeps_one_machine():
    rows = DeploymentRows()
    rows.set_deployments(_deps(), now=0)
    assert COLUMNS[NODE_COLUMN] == "Node"
    assert [r.node_text() for r in rows.rows] == ["This machine", "gpu-box", "This machine"]
    assert rows.nodes() == ["gpu-box", LOCAL]
    rows.set_node("gpu-box", now=0)
    assert rows.ids() == ["b2@gpu-box"]
    rows.set_node(LOCAL, now=0)
    assert rows.ids() == ["a1", "c3"]
    rows.set_deployments(_deps()[:1], now=0)  # the filter stays while the list changes
    assert rows.ids() == ["a1"]
    rows.set_node(ALL_NODES, now=0)
    assert len(rows.rows) == 1


def test_the_page_shows_the_node_column_and_filters_by_node(make_main_window, qtbot, demo_model):
    window = make_main_window()
    page = window.deployments
    qtbot.waitUntil(lambda: demo_model in [r.data.get("served_name") for r in page.rows.rows], timeout=20000)
    assert page.model.headerData(NODE_COLUMN, Qt.Orientation.Horizontal) == "Node"
    row = [r.data.get("served_name") for r in page.rows.rows].index(demo_model)
    assert page.model.data(page.model.index(row, NODE_COLUMN)) == "This machine"
    qtbot.waitUntil(lambda: page.node_filter.findData(LOCAL) >= 0, timeout=10000)
    assert page.node_filter.itemText(0) == "All nodes"
    page.node_filter.setCurrentIndex(page.node_filter.findData(LOCAL))
    assert demo_model in [r.data.get("served_name") for r in page.rows.rows]
    # A node that runs nothing of these: the table empties, and says what it shows.
    page.rows.set_node("no-such-node")
    page.model.refreshed()
    assert page.model.rowCount() == 0
    page._show_empty()
    assert not page.empty.isHidden() and "Choose All nodes" in page.empty.text()
    page.node_filter.setCurrentIndex(0)
    assert page.model.rowCount() == len(page.rows.rows) > 0
    page.node_filter.setCurrentIndex(page.node_filter.findData(LOCAL))
    qtbot.waitUntil(lambda: "showing" in page.summary.text() and "This machine" in page.summary.text(),
                    timeout=10000)
