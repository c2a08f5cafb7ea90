"""Settings → Nodes: the other machines this backend reaches (list, add, test, remove, trust a host key).

A host key is never accepted silently: an unknown key is a question showing its fingerprint and
type, with No as the default button; a changed key is an error with the backend's hint and no way
to accept it here. The plain logic (rows, form checks, texts) is in desktop/nodes.py.
"""

from __future__ import annotations

from urllib.parse import quote

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox, QPushButton,
                               QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from desktop import theme
from desktop.client import ApiError, BackendClient
from desktop.nodes import COLUMNS, DEFAULT_REMOTE_PORT, STATE_ROLE, AddNodeForm, host_key_changed_text, \
    node_rows, trust_question
from desktop.widgets.calls import Calls

REFRESH_MS = 3000
#: Adding a node opens an SSH connection and reads the remote token: slower than a plain call.
ADD_TIMEOUT_MS = 60000


def node_path(name: str, tail: str = "") -> str:
    return f"/api/nodes/{quote(name, safe='')}{tail}"


class HostKeyPrompts:
    """The host-key dialogs of one parent widget, kept as attributes so that tests can answer them.

    ``trust_box``: the open "Trust this key?" question (None when none); ``error_box``: the open error.
    """

    def __init__(self, parent: QWidget, calls: Calls):
        self.parent = parent
        self.calls = calls
        self.trust_box: QMessageBox | None = None
        self.error_box: QMessageBox | None = None

    def handle(self, name: str, error: ApiError, trusted, refused=None) -> bool:
        """Deal with a host-key refusal of ``name``; False when ``error`` is about something else.

        ``trusted(node)`` runs after the person said Yes and the backend stored the key and connected
        (``node``: its answer); ``refused(error)`` after No (``None``), or with the error when trusting
        or connecting after it failed (a changed key is an error shown, never a question).
        """
        if error.code == "host_key_unknown":
            self.ask_trust(name, error, trusted, refused)
            return True
        if error.code == "host_key_changed":
            self.show_error("Host key changed",
                            host_key_changed_text(name, error.message, error.hint, error.details))
            return True
        return False

    def ask_trust(self, name: str, error: ApiError, trusted, refused) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, "Trust this key?", trust_question(name, error.details),
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self.parent)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setEscapeButton(QMessageBox.StandardButton.No)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setObjectName("trustHostKeyBox")
        fingerprint = (error.details or {}).get("fingerprint")

        def on_finished(_result: int) -> None:
            answer = box.standardButton(box.clickedButton()) if box.clickedButton() else QMessageBox.StandardButton.No
            self.trust_box = None
            box.deleteLater()
            if answer != QMessageBox.StandardButton.Yes or not fingerprint:
                if refused is not None:
                    refused(None)
                return

            def failed(err: ApiError) -> None:
                # The key may be stored and the connection after it have failed: the caller says which.
                if refused is not None:
                    refused(err)
                else:
                    self.show_error(f"{name} is not connected", str(err))

            self.calls.post(node_path(name, "/trust"), {"fingerprint": fingerprint}, trusted, failed,
                            timeout_ms=ADD_TIMEOUT_MS)

        box.finished.connect(on_finished)
        self.trust_box = box
        box.open()

    def show_error(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, self.parent)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setObjectName("nodeErrorBox")

        def on_finished(_result: int) -> None:
            if self.error_box is box:
                self.error_box = None
            box.deleteLater()

        box.finished.connect(on_finished)
        self.error_box = box
        box.open()

    def close(self) -> None:
        for box in (self.trust_box, self.error_box):
            if box is not None:
                box.done(0)


class AddNodeDialog(QDialog):
    """Add a node over SSH (host, user, port, key file, passphrase) or TLS (URL, CA, client cert and key).

    The form is checked here first (desktop.nodes.AddNodeForm), then POST /api/nodes; an unknown
    host key asks the person (HostKeyPrompts), Yes trusts it and adds the node again.

    Signals:
        added(dict): the Node the backend answered.
    """

    added = Signal(dict)

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Add a node")
        self.setObjectName("addNodeDialog")
        self._calls = Calls(client, self)
        self.prompts = HostKeyPrompts(self, self._calls)
        em = self.fontMetrics().horizontalAdvance("M")
        self.setMinimumWidth(em * 38)

        self.name = QLineEdit()
        self.name.setPlaceholderText("gpu-box")
        self.transport = QComboBox()
        self.transport.addItem("SSH (your keys and ~/.ssh/config)", "ssh")
        self.transport.addItem("TLS with client certificates", "tls")
        self.remote_port = QLineEdit(str(DEFAULT_REMOTE_PORT))
        self.remote_port.setToolTip("The port of modeldeck-backend on the node's loopback")
        self.remote_home = QLineEdit()
        self.remote_home.setPlaceholderText("~/.config/modeldeck")
        self.remote_home.setToolTip("ModelDeck's folder on the node (its token is read from there over SSH); "
                                    "only when its backend runs with another MODELDECK_HOME")

        self.host = QLineEdit()
        self.host.setPlaceholderText("a host name, an IP address or a ~/.ssh/config alias")
        self.user = QLineEdit()
        self.user.setPlaceholderText("from ~/.ssh/config, else your user name")
        self.port = QLineEdit()
        self.port.setPlaceholderText("22")
        self.identity_file = QLineEdit()
        self.identity_file.setPlaceholderText("your agent's and ~/.ssh's keys")
        self.passphrase = QLineEdit()
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase.setPlaceholderText("only for a key file with a passphrase")
        ssh = QWidget()
        sf = QFormLayout(ssh)
        sf.setContentsMargins(0, 0, 0, 0)
        sf.addRow("Host", self.host)
        sf.addRow("User", self.user)
        sf.addRow("SSH port", self.port)
        sf.addRow("Key file", self._with_pick(self.identity_file, "Choose the SSH key file"))
        sf.addRow("Passphrase", self.passphrase)

        self.url = QLineEdit()
        self.url.setPlaceholderText("https://gpu-box:8443")
        self.ca_cert = QLineEdit()
        self.client_cert = QLineEdit()
        self.client_key = QLineEdit()
        self.tls_token = QLineEdit()
        self.tls_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.tls_token.setPlaceholderText("the node's <home>/token")
        tls = QWidget()
        tf = QFormLayout(tls)
        tf.setContentsMargins(0, 0, 0, 0)
        tf.addRow("URL", self.url)
        tf.addRow("CA certificate", self._with_pick(self.ca_cert, "Choose the CA certificate (PEM)"))
        tf.addRow("Client certificate", self._with_pick(self.client_cert, "Choose the client certificate (PEM)"))
        tf.addRow("Client key", self._with_pick(self.client_key, "Choose the client key (PEM)"))
        tf.addRow("Token", self.tls_token)

        self.pages = QStackedWidget()
        self.pages.addWidget(ssh)
        self.pages.addWidget(tls)
        self.transport.currentIndexChanged.connect(self.pages.setCurrentIndex)

        self.problems = QLabel()
        self.problems.setObjectName("addNodeProblems")
        self.problems.setWordWrap(True)
        self.problems.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems.setStyleSheet(f"color: {theme.color('danger').name()}")
        self.problems.hide()
        self.state = QLabel()
        self.state.setProperty("muted", True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.add_button = self.buttons.addButton("Add", QDialogButtonBox.ButtonRole.AcceptRole)
        self.add_button.setProperty("primary", True)
        self.add_button.setDefault(True)
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Reached over", self.transport)
        form.addRow("ModelDeck port", self.remote_port)
        form.addRow("ModelDeck folder", self.remote_home)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(self.pages)
        box.addWidget(self.problems)
        box.addWidget(self.state)
        box.addWidget(self.buttons)

    def _with_pick(self, edit: QLineEdit, caption: str) -> QWidget:
        row = QWidget()
        h = QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(edit, 1)
        pick = QPushButton(theme.icon("folder"), "Choose…")
        pick.clicked.connect(lambda: self._pick_into(edit, caption))
        h.addWidget(pick)
        return row

    def _pick_into(self, edit: QLineEdit, caption: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, caption, edit.text() or "")
        if path:
            edit.setText(path)

    def form(self) -> AddNodeForm:
        return AddNodeForm(name=self.name.text(), transport=self.transport.currentData(), host=self.host.text(),
                           user=self.user.text(), port=self.port.text(), identity_file=self.identity_file.text(),
                           passphrase=self.passphrase.text(), remote_port=self.remote_port.text(),
                           remote_home=self.remote_home.text(),
                           url=self.url.text(), ca_cert=self.ca_cert.text(), client_cert=self.client_cert.text(),
                           client_key=self.client_key.text(), token=self.tls_token.text())

    def show_problems(self, lines: list[str]) -> None:
        self.problems.setText("\n".join(lines))
        self.problems.setVisible(bool(lines))

    def submit(self) -> None:
        """Check the form; send it when nothing is wrong."""
        form = self.form()
        errors = form.errors()
        if errors:
            self.show_problems(list(errors.values()))
            return
        try:
            body = form.body()
        except (OSError, UnicodeDecodeError) as e:
            self.show_problems([f"A certificate file cannot be read ({e}); choose it again."])
            return
        self.show_problems([])
        self._send(body)

    def _busy(self, on: bool, text: str = "") -> None:
        self.add_button.setEnabled(not on)
        self.state.setText(text)

    def _send(self, body: dict) -> None:
        self._busy(True, f"Connecting to {body['name']}…")
        name = body["name"]

        def ok(node) -> None:
            self._busy(False)
            self.added.emit(node if isinstance(node, dict) else {"name": name})
            self.accept()

        def refused(error: ApiError | None) -> None:
            # The backend keeps a node whose key is unknown, waiting for trust: No (or a failure after
            # Yes) forgets it again, so that nothing half-added stays.
            why = "Not added: the host key was not trusted." if error is None else "Not added."
            if error is not None:
                self.show_problems([str(error)])
            self._busy(True, why)
            self._calls.delete(node_path(name), lambda _a: self._busy(False, why),
                               lambda e: self._busy(False, f"{why} Forgetting it failed: {e}"))

        def err(error: ApiError) -> None:
            self._busy(False)
            if not self.prompts.handle(name, error, ok, refused):
                self.show_problems([str(error)])

        self._calls.post("/api/nodes", body, ok, err, timeout_ms=ADD_TIMEOUT_MS)

    def done(self, result: int) -> None:  # noqa: D102 - QDialog's; also closes the calls and prompts
        self.prompts.close()
        self._calls.abort_all()
        super().done(result)


class NodesSection(QWidget):
    """The nodes table with Add…, Test and Remove; refreshed every few seconds while it is shown.

    Signals:
        nodes_changed(list): the latest GET /api/nodes list (for node filters elsewhere).
    """

    nodes_changed = Signal(list)

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self.client = client
        self._calls = Calls(client, self)
        self.prompts = HostKeyPrompts(self, self._calls)
        self.nodes: list[dict] = []
        self.add_dialog: AddNodeDialog | None = None
        self.confirm_box: QMessageBox | None = None
        self._listing = False

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("nodesTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.table.itemSelectionChanged.connect(self._update_buttons)

        self.add_button = QPushButton("Add…")
        self.add_button.clicked.connect(self.open_add)
        self.test_button = QPushButton(theme.icon("refresh"), "Test")
        self.test_button.setToolTip("Connect again now and show what the node answers")
        self.test_button.clicked.connect(self.test_selected)
        self.remove_button = QPushButton(theme.icon("remove"), "Remove…")
        self.remove_button.setToolTip("Forget this node (its models keep running there)")
        self.remove_button.clicked.connect(self.remove_selected)
        self.state = QLabel("Asking the backend…")
        self.state.setProperty("muted", True)
        self.state.setWordWrap(True)
        buttons = QHBoxLayout()
        for b in (self.add_button, self.test_button, self.remove_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.table)
        box.addLayout(buttons)
        box.addWidget(self.state)
        em = self.fontMetrics().horizontalAdvance("M")
        self.table.setMinimumHeight(em * 8)

        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._timer.start()
        theme.notifier().changed.connect(self._on_theme_changed)
        self._update_buttons()
        self.refresh()

    def _on_theme_changed(self, _scheme: str) -> None:
        """Icons and state colours are drawn in the theme's colours: draw them anew."""
        self.test_button.setIcon(theme.icon("refresh"))
        self.remove_button.setIcon(theme.icon("remove"))
        self.show_nodes(self.nodes)

    def _on_timer_timeout(self) -> None:
        if self.isVisible():
            self.refresh()

    def refresh(self) -> None:
        if self._listing:
            return
        self._listing = True
        self._calls.get("/api/nodes", self._on_nodes_loaded, self._on_nodes_failed)

    def _on_nodes_loaded(self, answer) -> None:
        self._listing = False
        nodes = (answer or {}).get("nodes", []) if isinstance(answer, dict) else []
        self.show_nodes(nodes)

    def _on_nodes_failed(self, error: ApiError) -> None:
        self._listing = False
        self.state.setText("This backend does not know about nodes yet (update modeldeck-backend)."
                           if error.status in (404, 405) else f"Could not list the nodes: {error}")

    def show_nodes(self, nodes: list[dict]) -> None:
        selected = self.selected_name()
        self.nodes = nodes
        rows = node_rows(nodes)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            tip = row.tooltip()
            for c, text in enumerate(row.cells()):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, row.name)
                item.setToolTip(tip)
                if c == 2:
                    item.setForeground(theme.color(STATE_ROLE.get(row.state, "text_muted")))
                if c in (3, 6):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
            if row.name == selected:
                self.table.selectRow(r)
        others = len([n for n in nodes if n.get("name") != "local"])
        self.state.setText("Only this machine. Add another machine running modeldeck-backend to launch there."
                           if not others else f"{others} other machine{'s' if others != 1 else ''}.")
        self._update_buttons()
        self.nodes_changed.emit(nodes)

    def node(self, name: str) -> dict | None:
        return next((n for n in self.nodes if n.get("name") == name), None)

    def selected_name(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else None

    def select(self, name: str) -> bool:
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) == name:
                self.table.selectRow(r)
                return True
        return False

    def _update_buttons(self) -> None:
        name = self.selected_name()
        remote = bool(name) and name != "local"
        self.test_button.setEnabled(remote)
        self.remove_button.setEnabled(remote)

    def open_add(self) -> AddNodeDialog:
        dialog = AddNodeDialog(self.client, self)
        dialog.added.connect(self._on_node_added)
        dialog.finished.connect(lambda _r: self._on_add_dialog_finished(dialog))
        self.add_dialog = dialog
        dialog.open()
        return dialog

    def _on_add_dialog_finished(self, dialog: AddNodeDialog) -> None:
        if self.add_dialog is dialog:
            self.add_dialog = None
        dialog.deleteLater()

    def _on_node_added(self, node: dict) -> None:
        self.state.setText(f"Added {node.get('name')}.")
        self._listing = False
        self.refresh()

    def test_selected(self) -> None:
        name = self.selected_name()
        if not name or name == "local":
            return
        self.state.setText(f"Testing {name}…")
        self.test_button.setEnabled(False)

        def ok(node) -> None:
            self._update_buttons()
            state = (node or {}).get("state") if isinstance(node, dict) else None
            if state == "connected":
                rtt = node.get("rtt_ms")
                self.state.setText(f"{name} answers" + (f" in {rtt:.1f} ms." if rtt is not None else "."))
            else:
                problem = " ".join(x for x in ((node or {}).get("error"), (node or {}).get("hint")) if x)
                self.state.setText(f"{name}: {state or 'no answer'}. {problem}".strip())
            self.refresh()

        def err(error: ApiError) -> None:
            self._update_buttons()
            self.state.setText(f"{name}: {error.message}")
            if not self.prompts.handle(name, error, lambda _node: self.refresh()):
                self.prompts.show_error(f"{name} did not answer", str(error))

        self._calls.post(node_path(name, "/test"), {}, ok, err, timeout_ms=ADD_TIMEOUT_MS)

    def remove_selected(self) -> None:
        name = self.selected_name()
        if not name or name == "local":
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Remove node",
                          f"Forget the node '{name}'?\n\nIts models keep running on that machine; ModelDeck "
                          "stops showing and routing to them. Its stored credentials are deleted.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setObjectName("removeNodeBox")

        def on_finished(_result: int) -> None:
            yes = box.clickedButton() is not None and \
                box.standardButton(box.clickedButton()) == QMessageBox.StandardButton.Yes
            self.confirm_box = None
            box.deleteLater()
            if yes:
                self._calls.delete(node_path(name), lambda _a: self._on_removed(name),
                                   lambda e: self.prompts.show_error("Not removed", str(e)))

        box.finished.connect(on_finished)
        self.confirm_box = box
        box.open()

    def _on_removed(self, name: str) -> None:
        self.state.setText(f"Removed {name}.")
        self._listing = False
        self.refresh()

    def shutdown(self) -> None:
        self._timer.stop()
        self.prompts.close()
        if self.add_dialog is not None:
            self.add_dialog.done(0)
        if self.confirm_box is not None:
            self.confirm_box.done(0)
        self._calls.abort_all()
