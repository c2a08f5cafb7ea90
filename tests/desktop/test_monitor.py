"""The Monitor page against a real backend: backfill, live points, no-GPU notice, badges, time window."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from desktop.client import BackendClient
from desktop.monitor.store import deployment_key
from desktop.pages.monitor import MonitorPage
from desktop.widgets.chart import LineChart
from tests.support.live_server import free_port

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]

SCREENSHOT = "/tmp/modeldeck-monitor.png"


@pytest.fixture()
def monitor(qtbot, live_backend):
    url, token = live_backend
    client = BackendClient(url, token)
    page = MonitorPage(client)
    qtbot.addWidget(page)
    page.resize(1200, 1000)
    page.show()
    yield page
    page.shutdown()
    assert not page.streams()
    client.deleteLater()


def test_chart_gains_points_from_the_live_stream(qtbot, monitor):
    qtbot.waitUntil(lambda: monitor.cpu_chart.point_count() > 0, timeout=10000)
    start = monitor.cpu_chart.point_count()
    qtbot.waitUntil(lambda: monitor.cpu_chart.point_count() >= start + 2, timeout=5000)
    assert monitor.streams() and monitor.streams()[0].running
    assert monitor.mem_chart.point_count() >= start + 2


def test_without_a_gpu_the_page_says_so_and_shows_the_rest(qtbot, monitor):
    qtbot.waitUntil(lambda: monitor.store.gpu_status != {}, timeout=10000)
    if monitor.store.gpu_status.get("available"):
        pytest.skip("this machine has a GPU")
    qtbot.waitUntil(monitor.gpu_notice.isVisible, timeout=5000)
    text = monitor.gpu_notice.text()
    assert "No GPU" in text and (monitor.store.gpu_status.get("reason") or "NVML") in text
    assert monitor.gpu_charts == {}
    assert monitor.cpu_chart.isVisible() and monitor.mem_chart.isVisible()


def test_deployments_are_charted_and_running_on_cpu_is_marked(qtbot, monitor, demo_model):
    qtbot.waitUntil(lambda: any(c.name_label.text().find(demo_model) >= 0 for c in monitor.cards.values()),
                    timeout=10000)
    card = next(c for c in monitor.cards.values() if demo_model in c.name_label.text())
    assert not card.badge.isVisible()  # the demo wants no GPU
    qtbot.waitUntil(lambda: card.charts[0].point_count() >= 2, timeout=5000)
    # A deployment that wants a GPU yet holds none, as the backend flags it:
    flagged = {"deployment_id": "fake-gpu", "container_id": "c", "cpu_pct": 150.0, "mem_used_bytes": 1 << 30,
               "mem_limit_bytes": None, "vram_bytes": 0, "gpu_indices": [], "wants_gpu": True,
               "running_on_cpu": True}
    base = {"time": monitor.store.latest_time + 0.01, "seq": 0,
            "host": {"cpu_pct": monitor.store.get("host.cpu").last()[1],
                     "mem_used_bytes": monitor.store.get("host.mem").last()[1],
                     "mem_total_bytes": monitor.store.host_mem_total},
            "gpus": [], "gpu_status": monitor.store.gpu_status,
            "deployments": {card.deployment_id: {"cpu_pct": 1.0, "mem_used_bytes": 40 << 20, "vram_bytes": None,
                                                 "running_on_cpu": False, "wants_gpu": False},
                            "fake-gpu": flagged}}
    assert monitor.ingest(base)
    fake = monitor.cards["fake-gpu"]
    qtbot.waitUntil(fake.badge.isVisible, timeout=2000)  # a new card shows on the next event loop pass
    assert "running on CPU" in fake.badge.text() and not card.badge.isVisible()
    # The sample at the injected time (the live stream may have added a newer one, without fake-gpu, meanwhile).
    times, values = monitor.store.get(deployment_key("fake-gpu", "cpu")).window(base["time"], base["time"], margin=0)
    assert list(zip(times, values)) == [(base["time"], 150.0)]
    monitor.grab().save(SCREENSHOT)


def test_time_window_scrolls_and_zooms_within_fifteen_minutes(qtbot, monitor):
    qtbot.waitUntil(lambda: monitor.cpu_chart.point_count() > 0, timeout=10000)
    window = monitor.window
    monitor.span_combo.setCurrentIndex(0)
    assert window.span == 60
    monitor.scroll_bar.setValue(monitor.scroll_bar.maximum() - 120)
    assert window.back == 120 and not window.live and monitor.live_button.isEnabled()
    qtbot.mouseClick(monitor.live_button, Qt.MouseButton.LeftButton)
    assert window.live and monitor.scroll_bar.value() == monitor.scroll_bar.maximum()
    window.zoom(100)
    assert window.span == 900 and window.back == 0
    window.zoom(0.0001)
    assert window.span == 30
    monitor.cpu_chart.grab()  # paints at every zoom level without error
    chart = monitor.cpu_chart
    qtbot.mouseMove(chart, chart.rect().center())
    qtbot.waitUntil(lambda: chart._hover_x is not None, timeout=2000)
    chart.grab().save("/tmp/modeldeck-chart-hover.png")  # the hover read-out paints too


def test_chart_draws_at_most_two_points_per_pixel_column(qtbot):
    """What keeps a paint of a long window cheap, asserted as a count (speed is the bench's to measure):
    15 minutes of half-second samples become at most two points (min, max) per pixel column, peaks kept."""
    from PySide6.QtCore import QRectF
    from desktop.monitor.series import RingSeries
    from desktop.widgets.chart import TimeWindow, _polylines

    window = TimeWindow(span=900)
    series = [RingSeries(str(k)) for k in range(3)]
    now = 1_000_000.0
    for k, s in enumerate(series):
        for i in range(1800):
            s.append(now - 900 + i * 0.5, (i * (k + 1)) % 100)
    plot = QRectF(60, 20, 500, 150)
    t0, t1 = now - 900, now
    for s in series:
        times, values = s.window(t0, t1)
        assert len(times) == 1800
        polys = _polylines(times, values, t0, plot, plot.width() / (t1 - t0), plot.height() / 100)
        points = [pt for poly in polys for pt in poly]
        assert 0 < len(points) <= 2 * int(plot.width())
        ys = [plot.bottom() - pt.y() for pt in points]
        # the thinning keeps the extremes
        assert min(ys) == min(values) * plot.height() / 100 and max(ys) == max(values) * plot.height() / 100
        assert all(plot.left() - 1e-6 <= pt.x() <= plot.right() + 1e-6 for pt in points)
    chart = LineChart("load", window, lambda: now)
    for s in series:
        chart.add_line(s, s.name)
    qtbot.addWidget(chart)
    chart.resize(600, 200)
    assert not chart.grab().isNull()
    assert chart.point_count() == 3 * 1800


def test_backend_down_shows_a_message_and_retries(qtbot):
    client = BackendClient(f"http://127.0.0.1:{free_port()}", "x")
    page = MonitorPage(client)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitUntil(page.banner.isVisible, timeout=10000)
    assert "Cannot load stats" in page.banner.text() and "Retrying" in page.banner.text()
    assert page._retry.isActive()
    page.shutdown()
    assert not page._retry.isActive()
