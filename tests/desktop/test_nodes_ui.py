"""Settings → Nodes against a real backend: the Add form's checks, refusals with their hint, and the
host-key question for a real sshd in its own network namespace (tests/support/remote_node.py)."""

from __future__ import annotations

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from backend.app import create_app
from backend.settings import Settings
from desktop.client import BackendClient
from desktop.pages.nodes import NodesSection
from tests.conftest import RUN_ID, RUN_LABEL
from tests.desktop.conftest import TOKEN
from tests.support.live_server import free_port, serve

pytestmark = pytest.mark.gui


@pytest.fixture
def nodes_backend(engine, demo_base_image, tmp_path):
    """(url, home) of a real backend of this test's own: the nodes (and trusted keys) it stores go with it."""
    home = tmp_path / "nodes-home"
    settings = Settings(home=home, token=TOKEN, demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url, home


def _nodes(url: str) -> list[str]:
    r = httpx.get(f"{url}/api/nodes", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    r.raise_for_status()
    return [n["name"] for n in r.json()["nodes"]]


@pytest.fixture
def section(qtbot, nodes_backend):
    client = BackendClient(nodes_backend[0], TOKEN)
    widget = NodesSection(client)
    qtbot.addWidget(widget)
    widget.resize(1100, 360)
    with qtbot.waitExposed(widget):
        widget.show()
    qtbot.waitUntil(lambda: widget.table.rowCount() >= 1, timeout=10000)
    yield widget
    widget.shutdown()
    client.deleteLater()


def _cell(section: NodesSection, name: str, column: int) -> str | None:
    for r in range(section.table.rowCount()):
        if section.table.item(r, 0).text() == name:
            return section.table.item(r, column).text()
    return None


def test_the_list_shows_this_machine_first_and_remote_buttons_stay_off_for_it(section):
    assert _cell(section, "local", 1) == "this machine"
    assert _cell(section, "local", 2) == "Connected"
    section.select("local")
    assert not section.test_button.isEnabled() and not section.remove_button.isEnabled()
    assert "Only this machine" in section.state.text()


def test_the_add_form_refuses_bad_input_before_sending_anything(section, qtbot, nodes_backend, tmp_path):
    dialog = section.open_add()
    qtbot.waitExposed(dialog)
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    text = dialog.problems.text()
    assert dialog.problems.isVisible() and "Give the node a name" in text and "Enter the host" in text
    dialog.name.setText("local")
    dialog.host.setText("root@gpu-box")
    dialog.port.setText("99999")
    dialog.identity_file.setText(str(tmp_path / "no-such-key"))
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    text = dialog.problems.text()
    assert "'local' is this machine's name" in text and "User field" in text
    assert "1 to 65535" in text and "does not exist" in text
    dialog.transport.setCurrentIndex(1)
    assert dialog.pages.currentIndex() == 1
    dialog.name.setText("lab")
    dialog.url.setText("http://lab:8765")
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    assert "https://" in dialog.problems.text() and "CA certificate" in dialog.problems.text()
    assert dialog.isVisible() and dialog.state.text() == ""  # nothing was sent
    assert _nodes(nodes_backend[0]) == ["local"]


def test_a_refusal_from_the_backend_shows_its_message_and_hint_and_stores_nothing(section, qtbot, nodes_backend):
    dialog = section.open_add()
    dialog.name.setText("nothing-there")
    dialog.host.setText("127.0.0.1")
    dialog.port.setText(str(free_port()))  # nothing listens: ssh is refused at once
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.problems.isVisible(), timeout=120000)
    assert dialog.isVisible() and dialog.add_button.isEnabled()
    assert section.prompts.trust_box is None and dialog.prompts.trust_box is None
    text = dialog.problems.text()
    assert "127.0.0.1" in text or "reach" in text.lower(), text
    assert len(text.split(".")) > 2, f"a message and a hint: {text}"
    assert _nodes(nodes_backend[0]) == ["local"]


def _add_remote(section: NodesSection, qtbot, remote_node, name: str):
    dialog = section.open_add()
    qtbot.waitExposed(dialog)
    dialog.name.setText(name)
    dialog.host.setText(remote_node.ip)
    dialog.user.setText(remote_node.user)
    dialog.identity_file.setText(str(remote_node.client_key))
    dialog.remote_home.setText(str(remote_node.remote_home))  # the node's backend runs with its own home
    qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.prompts.trust_box is not None and dialog.prompts.trust_box.isVisible(),
                    timeout=120000)
    return dialog, dialog.prompts.trust_box


def _wait_added(qtbot, section: NodesSection, dialog) -> None:
    """Wait for the Add dialog to close after Yes; on a timeout, say what the dialog showed."""
    try:
        qtbot.waitUntil(lambda: section.add_dialog is None, timeout=120000)
    except Exception:
        error = dialog.prompts.error_box
        raise AssertionError(f"the node was not added: state {dialog.state.text()!r}, problems "
                             f"{dialog.problems.text()!r}, error {error.text() if error else None!r}") from None


def test_an_unknown_host_key_is_a_question_and_no_stores_nothing(section, qtbot, nodes_backend, remote_node):
    dialog, box = _add_remote(section, qtbot, remote_node, "gpu-no")
    assert box.windowTitle() == "Trust this key?"
    assert remote_node.host_key_fingerprint in box.text() and "ED25519" in box.text().upper()
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.No), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Not added" in dialog.state.text() and dialog.add_button.isEnabled(), timeout=60000)
    assert _nodes(nodes_backend[0]) == ["local"]
    known = nodes_backend[1] / "known_hosts"
    assert not known.exists() or remote_node.ip not in known.read_text()
    dialog.reject()


def test_yes_trusts_the_key_and_the_node_shows_connected_then_remove_forgets_it(section, qtbot, nodes_backend,
                                                                                remote_node):
    dialog, box = _add_remote(section, qtbot, remote_node, "gpu-yes")
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    _wait_added(qtbot, section, dialog)
    qtbot.waitUntil(lambda: _cell(section, "gpu-yes", 2) == "Connected", timeout=60000)
    assert _cell(section, "gpu-yes", 1).endswith(f"{remote_node.ip}:22") or remote_node.ip in _cell(section,
                                                                                                   "gpu-yes", 1)
    assert _cell(section, "gpu-yes", 3).endswith("ms")
    assert "gpu-yes" in _nodes(nodes_backend[0])

    assert section.select("gpu-yes") and section.test_button.isEnabled()
    qtbot.mouseClick(section.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "gpu-yes answers" in section.state.text(), timeout=120000)

    qtbot.mouseClick(section.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: section.confirm_box is not None and section.confirm_box.isVisible())
    confirm = section.confirm_box
    assert confirm.defaultButton() is confirm.button(QMessageBox.StandardButton.No)
    qtbot.mouseClick(confirm.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _cell(section, "gpu-yes", 0) is None, timeout=60000)
    assert _nodes(nodes_backend[0]) == ["local"]


def test_a_changed_host_key_is_an_error_with_the_hint_never_a_question(section, qtbot, nodes_backend,
                                                                       remote_node):
    dialog, box = _add_remote(section, qtbot, remote_node, "gpu-rot")
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    _wait_added(qtbot, section, dialog)
    qtbot.waitUntil(lambda: _cell(section, "gpu-rot", 2) == "Connected", timeout=120000)
    old = remote_node.host_key_fingerprint
    remote_node.rotate_host_key()
    try:
        assert remote_node.host_key_fingerprint != old
        section.select("gpu-rot")
        qtbot.mouseClick(section.test_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: section.prompts.error_box is not None and section.prompts.error_box.isVisible(),
                        timeout=120000)
        error = section.prompts.error_box
        assert section.prompts.trust_box is None
        assert error.windowTitle() == "Host key changed" and "does not accept" in error.text()
        assert error.standardButtons() == QMessageBox.StandardButton.Ok
        error.done(0)
        qtbot.waitUntil(lambda: _cell(section, "gpu-rot", 2) in ("Error", "Unreachable"), timeout=60000)
    finally:
        httpx.delete(f"{nodes_backend[0]}/api/nodes/gpu-rot", headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=30)
