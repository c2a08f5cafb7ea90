"""The Playground page against a real backend and demo models: streaming, stop, compare, history, exports."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from desktop.client import BackendClient
from desktop.pages.monitor import MonitorPage
from desktop.pages.playground import PlaygroundPage
from tests.conftest import RUN_ID
from tests.support.deployments import demo_body, launch_ready, wait_served
from tests.support.live_server import free_port

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]

SCREENSHOT_COMPARE = "/tmp/modeldeck-playground-compare.png"
SCREENSHOT_PLAYGROUND = "/tmp/modeldeck-playground.png"


@pytest.fixture(scope="module")
def second_model(live_backend, demo_model) -> str:
    """Served name of a second ready demo deployment, for comparisons."""
    url, token = live_backend
    name = f"t{RUN_ID}-desk-b"
    dep = launch_ready(url, token, demo_body(name, env={"DEMO_TOKEN_DELAY": "0.02"}))
    wait_served(url, token, name)
    yield name
    httpx.delete(f"{url}/api/deployments/{dep['id']}", headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture()
def client(live_backend) -> BackendClient:
    url, token = live_backend
    c = BackendClient(url, token)
    yield c
    c.deleteLater()


@pytest.fixture()
def page(qtbot, client, demo_model):
    """A shown PlaygroundPage whose model list has loaded; at teardown shutdown() leaves no stream open."""
    p = PlaygroundPage(client)
    qtbot.addWidget(p)
    p.resize(1400, 800)
    p.show()
    qtbot.waitUntil(lambda: demo_model in p._models, timeout=10000)
    p.columns[0].select_model(demo_model)
    yield p
    p.shutdown()
    assert not p.streams()


def _record_lengths(column) -> list[int]:
    lengths: list[int] = []
    column.view.rendered.connect(lambda: lengths.append(len(column.view.toPlainText())))
    return lengths


def _steps(lengths: list[int]) -> int:
    """How many times the view grew."""
    return sum(1 for a, b in zip(lengths, lengths[1:]) if b > a)


def test_reply_streams_into_the_view_in_steps_with_metrics(qtbot, page, demo_model):
    page.max_tokens_spin.setValue(40)
    lengths = _record_lengths(page.columns[0])
    qtbot.keyClicks(page.prompt_edit, "Tell me about GPUs")
    with qtbot.waitSignal(page.send_finished, timeout=30000):
        qtbot.keyClick(page.prompt_edit, Qt.Key.Key_Return)
        assert page.prompt_edit.toPlainText() == ""  # Enter sent it
    assert _steps(lengths) >= 3, lengths
    assert len(set(lengths)) >= 3
    reply = page.columns[0].transcript.turns[-1]
    assert reply.role == "assistant" and reply.content and reply.model == demo_model
    assert reply.metrics.from_usage and 0 < reply.metrics.completion_tokens <= 40
    assert reply.metrics.ttft_s > 0 and reply.metrics.tokens_per_s > 0
    text = page.columns[0].metrics_label.text()
    assert "TTFT" in text and "tok/s" in text and "tokens" in text
    assert "TTFT" in page.columns[0].view.toPlainText()  # metrics under the reply too
    print(f"\nmetrics: {text}")


def test_shift_enter_is_a_new_line(qtbot, page):
    qtbot.keyClicks(page.prompt_edit, "line one")
    qtbot.keyClick(page.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(page.prompt_edit, "line two")
    assert page.prompt_edit.toPlainText() == "line one\nline two"
    assert not page.columns[0].busy


def test_stop_mid_reply_stops_at_once(qtbot, page):
    page.max_tokens_spin.setValue(2000)
    column = page.columns[0]
    page.prompt_edit.setPlainText("Write a very long story")
    page.send()
    qtbot.waitUntil(lambda: len(column.transcript.turns[-1].content) > 30, timeout=15000)
    run = column.run
    with qtbot.waitSignal(page.send_finished, timeout=2000):
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    frozen = column.transcript.turns[-1].content
    shown = column.view.toPlainText()
    assert not run.stream.running  # aborted at once: nothing is left to deliver text
    QApplication.processEvents()
    assert column.transcript.turns[-1].content == frozen
    assert column.view.toPlainText() == shown
    assert column.transcript.turns[-1].finish_reason == "stopped"
    assert "stopped" in column.metrics_label.text() and page.send_button.isEnabled()
    assert column.transcript.turns[-1].metrics.completion_tokens < 2000


def test_escape_stops_generation(qtbot, page):
    page.max_tokens_spin.setValue(2000)
    page.prompt_edit.setPlainText("Another long one")
    page.send()
    column = page.columns[0]
    qtbot.waitUntil(lambda: len(column.transcript.turns[-1].content) > 10, timeout=15000)
    with qtbot.waitActive(page):  # Escape is a window shortcut: it needs the window active (an X round trip)
        page.activateWindow()
    page.prompt_edit.setFocus()
    with qtbot.waitSignal(page.send_finished, timeout=2000):
        qtbot.keyClick(page.prompt_edit, Qt.Key.Key_Escape)
    assert column.transcript.turns[-1].finish_reason == "stopped"


def test_compare_streams_into_two_columns(qtbot, page, demo_model, second_model):
    page.refresh_models()
    qtbot.waitUntil(lambda: second_model in page._models, timeout=10000)
    page.compare_check.setChecked(True)
    left, right = page.columns[0], page.columns[1]
    assert left.isVisible() and right.isVisible() and not page.columns[2].isVisible()
    left.select_model(demo_model)
    right.select_model(second_model)
    page.max_tokens_spin.setValue(60)
    lengths = {0: _record_lengths(left), 1: _record_lengths(right)}
    page.prompt_edit.setPlainText("Compare yourselves")
    with qtbot.waitSignal(page.send_finished, timeout=30000):
        page.send()
        qtbot.waitUntil(lambda: len(left.transcript.turns[-1].content) > 40
                        and len(right.transcript.turns[-1].content) > 40, timeout=15000)
        page.grab().save(SCREENSHOT_COMPARE)
    for k, column in enumerate((left, right)):
        assert _steps(lengths[k]) >= 3, (k, lengths[k])
        reply = column.transcript.turns[-1]
        assert reply.model == column.model() and reply.metrics.completion_tokens > 0
        assert "tok/s" in column.metrics_label.text()
    assert left.model() != right.model()


def test_history_entry_can_be_reopened_deleted_and_exported(qtbot, page, tmp_path):
    marker = f"history-check-{RUN_ID}-{time.monotonic_ns()}"
    page.max_tokens_spin.setValue(12)
    page.temperature_spin.setValue(0.4)
    page.prompt_edit.setPlainText(marker)
    with qtbot.waitSignal(page.send_finished, timeout=30000):
        page.send()
    page.history.search_edit.setText(marker)
    qtbot.waitUntil(lambda: any(marker in e["preview"] for e in page.history.entries), timeout=10000)
    entry_id = page.history.entries[0]["id"]
    page.history.select_id(entry_id)
    page.clear()
    assert page.columns[0].transcript.turns == []
    page.temperature_spin.setValue(1.5)
    page.history.reopen_selected()
    qtbot.waitUntil(lambda: len(page.columns[0].transcript.turns) == 2, timeout=5000)
    turns = page.columns[0].transcript.turns
    assert turns[0].content == marker and turns[1].content
    assert page.temperature_spin.value() == pytest.approx(0.4)
    page.columns[0].view.flush()
    assert marker in page.columns[0].view.toPlainText()

    out = tmp_path / "export.json"
    with qtbot.waitSignal(page.history.message, timeout=10000):
        page.history.export_to(out)
    exported = json.loads(out.read_text())
    assert [e["id"] for e in exported] == [entry_id]

    with qtbot.waitSignal(page.history.loaded, timeout=10000):
        page.history.delete_selected()
    assert not any(e["id"] == entry_id for e in page.history.entries)


def test_copy_as_curl_and_python(qtbot, page, demo_model):
    page.temperature_spin.setValue(0.3)
    page.top_p_spin.setValue(0.9)
    page.max_tokens_spin.setValue(77)
    page.stop_edit.setText("END, ###")
    page.seed_edit.setText("1234")
    page.system_edit.setPlainText("You are terse.")
    page.prompt_edit.setPlainText("What's up?")
    text = page.copy_as_curl()
    assert QGuiApplication.clipboard().text() == text
    for needle in (demo_model, '"temperature": 0.3', '"top_p": 0.9', '"max_tokens": 77', '"seed": 1234',
                   '"END"', '"###"', "You are terse.", "/v1/chat/completions", "$MODELDECK_TOKEN"):
        assert needle in text, needle
    assert page._client.token not in text
    py = page.copy_as_python()
    compile(py, "<clipboard>", "exec")
    assert f"model={demo_model!r}" in py and "seed=1234" in py and page._client.token not in py
    assert page.prompt_edit.toPlainText() == "What's up?"  # copying sends nothing


def test_failed_send_keeps_the_prompt_and_says_why(qtbot, page):
    page.columns[0].select_model(f"no-such-model-{RUN_ID}")
    page.prompt_edit.setPlainText("Will this work?")
    with qtbot.waitSignal(page.send_finished, timeout=10000):
        page.send()
    column = page.columns[0]
    assert page.prompt_edit.toPlainText() == "Will this work?"
    assert column.error_label.isVisible() and "does not exist" in column.error_label.text()
    assert column.transcript.turns == []


def test_gui_stays_responsive_while_streaming_and_monitoring(qtbot, client, page):
    monitor = MonitorPage(client)
    qtbot.addWidget(monitor)
    monitor.resize(1200, 900)
    monitor.show()
    qtbot.waitUntil(lambda: monitor.cpu_chart.point_count() > 0, timeout=10000)
    worst = [0.0]
    clock = QElapsedTimer()
    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.setInterval(16)

    def on_probe_timeout():
        late = clock.restart() - 16
        worst[0] = max(worst[0], late)

    probe.timeout.connect(on_probe_timeout)
    updates = []
    monitor.updated.connect(lambda: updates.append(1))
    page.max_tokens_spin.setValue(150)
    page.prompt_edit.setPlainText("Stream while the monitor charts")
    clock.start()
    probe.start()
    try:
        with qtbot.waitSignal(page.send_finished, timeout=30000):
            page.send()
        qtbot.waitUntil(lambda: len(updates) >= 3, timeout=10000)
    finally:
        probe.stop()
        monitor.shutdown()
    page.grab().save(SCREENSHOT_PLAYGROUND)
    print(f"\nworst GUI-thread stall while streaming + monitoring: {worst[0]:.0f} ms "
          f"({page.columns[0].transcript.turns[-1].metrics.completion_tokens} tokens, {len(updates)} stats updates)")
    assert worst[0] < 250
    assert not monitor.streams()


def test_markdown_view_renders_at_most_twenty_times_a_second(qtbot):
    from PySide6.QtGui import QFontInfo, QTextCursor, QTextFormat

    from desktop.widgets.markdown_view import MarkdownView

    view = MarkdownView()
    qtbot.addWidget(view)
    renders = []
    view.rendered.connect(lambda: renders.append(1))
    text = ""
    for k in range(200):  # a burst of tokens faster than any screen needs
        text += f"word{k} "
        view.set_markdown(text)
    assert renders == [] and view.markdown_text() == text
    qtbot.waitUntil(lambda: bool(renders), timeout=1000)
    assert len(renders) == 1 and "word199" in view.toPlainText()
    view.set_markdown("Code:\n\n```python\nprint('hi')\n```\n")
    view.flush()
    block = view.document().findBlock(view.toPlainText().index("print"))
    assert block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence)
    assert QFontInfo(block.begin().fragment().charFormat().font()).fixedPitch()  # monospace code
    view.set_markdown("Run `ls -l` now")  # inline code too, whatever fontconfig's "monospace" leads to
    view.flush()
    cursor = QTextCursor(view.document())
    cursor.setPosition(view.toPlainText().index("ls -l") + 1)
    assert QFontInfo(cursor.charFormat().font()).fixedPitch()
    assert not view.document().begin().begin().fragment().charFormat().fontFamilies()  # prose keeps its font


def test_shutdown_mid_reply_leaves_no_open_stream(qtbot, page):
    page.max_tokens_spin.setValue(2000)
    page.prompt_edit.setPlainText("Keep going")
    page.send()
    qtbot.waitUntil(lambda: len(page.columns[0].transcript.turns[-1].content) > 10, timeout=15000)
    assert page.streams()
    page.shutdown()
    assert not page.streams()


def test_backend_down_says_so_and_retries(qtbot):
    p = PlaygroundPage(BackendClient(f"http://127.0.0.1:{free_port()}", "x"))
    qtbot.addWidget(p)
    p.show()
    qtbot.waitUntil(p.banner.isVisible, timeout=10000)
    assert "Cannot load models" in p.banner.text() and "Retrying" in p.banner.text()
    assert p._models_timer.isActive()
    p.prompt_edit.setPlainText("hello")
    p.send()  # no model: says so, keeps the prompt
    assert "No ready model" in p.banner.text() and p.prompt_edit.toPlainText() == "hello"
    p.shutdown()


def test_markdown_view_bounds_its_cost_on_long_text(qtbot):
    """Growth is appended between renders; a long paragraph is kept in pieces that later updates leave alone."""
    from desktop.widgets.markdown_view import PIECE_CHARS, MarkdownView

    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_markdown("Hello")
    view.flush()
    with qtbot.waitSignal(view.rendered, timeout=2000):
        view.set_markdown("Hello **world**")
    assert view.toPlainText().endswith("Hello **world**"), "growth soon after a render is appended as it is"
    view.flush()
    assert view.toPlainText().endswith("Hello world"), "a render turns it into Markdown"
    long_text = " ".join(f"word{i} *emphasis* `code`" for i in range(6000))  # one giant paragraph
    view.set_markdown(long_text)
    view.flush()
    assert view.document().blockCount() >= len(long_text) // PIECE_CHARS, "a long paragraph is shown in pieces"
    assert max(len(b) for b in view.toPlainText().split("\n")) <= PIECE_CHARS
    view.document().begin().setUserState(7)  # a mark that rendering the first piece again would wipe
    view.set_markdown(long_text + " more")
    view.flush()
    assert view.toPlainText().endswith("more")
    assert view.document().begin().userState() == 7, "only the end was rendered again"