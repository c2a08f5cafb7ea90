"""The first-run check: what the machine needs to launch models (engine, GPU, token, caches), each with its fix."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QApplication, QDialog, QFrame, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QScrollArea, QToolButton, QVBoxLayout, QWidget)

from desktop import fonts, theme
from desktop.client import ApiError, BackendClient
from desktop.widgets.calls import Calls

#: (icon, colour role) per level of /api/setup/checks.
LEVEL_ICON = {"pass": ("check", "success"), "warn": ("warning", "warning"), "fail": ("warning", "danger")}
LEVEL_WORD = {"pass": "OK", "warn": "Limited", "fail": "Needs fixing"}


class CheckRow(QFrame):
    """One check: its icon, title and level word, the detail, and the fix with a copy button."""

    def __init__(self, check: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        self.check = check
        level = check.get("level", "fail")
        em = self.fontMetrics().horizontalAdvance("M")
        name, role = LEVEL_ICON.get(level, LEVEL_ICON["fail"])
        self.icon = QLabel()
        self.icon.setPixmap(theme.icon(name, role).pixmap(int(em * 1.6), int(em * 1.6)))
        self.icon.setToolTip(LEVEL_WORD.get(level, level))
        self.title = QLabel(f"<b>{_escape(check.get('title', ''))}</b>"
                            f" &nbsp;<span style='color:{theme.color(role).name()}'>"
                            f"{LEVEL_WORD.get(level, level)}</span>")
        self.detail = _selectable(check.get("detail") or "")
        self.detail.setProperty("muted", True)
        text = QVBoxLayout()
        text.setSpacing(int(em * 0.3))
        text.addWidget(self.title)
        text.addWidget(self.detail)
        self.fix: QLabel | None = None
        self.copy: QToolButton | None = None
        if check.get("fix") and level != "pass":
            self.fix = _selectable(check["fix"])
            self.fix.setObjectName("fixText")
            self.fix.setStyleSheet(f"background: {theme.color('mono_bg').name()}; border-radius: 4px;"
                                   f' padding: 4px 6px; font-family: "{fonts.fixed_family()}";')
            self.copy = QToolButton()
            self.copy.setIcon(theme.icon("copy"))
            self.copy.setToolTip("Copy the fix")
            self.copy.setAutoRaise(True)
            self.copy.clicked.connect(self._on_copy_clicked)
            fix_row = QHBoxLayout()
            fix_row.addWidget(self.fix, 1)
            fix_row.addWidget(self.copy, 0, Qt.AlignmentFlag.AlignTop)
            text.addLayout(fix_row)
        row = QHBoxLayout(self)
        row.setContentsMargins(em, int(em * 0.7), em, int(em * 0.7))
        row.setSpacing(em)
        row.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addLayout(text, 1)

    def _on_copy_clicked(self) -> None:
        QApplication.clipboard().setText(self.check.get("fix") or "")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _selectable(text: str) -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                  | Qt.TextInteractionFlag.TextSelectableByKeyboard)
    return label


class FirstRunDialog(QDialog):
    """Runs ``/api/setup/checks`` and shows each check, with a field for the Hugging Face token.

    Nothing here blocks: every call goes through ``BackendClient`` and answers arrive as signals.

    Signals:
        checks_loaded(object): the list of checks (dicts) of the latest answer.
        token_saved(): the token was stored (PUT) or removed (DELETE); a re-check follows.
    """

    checks_loaded = Signal(object)
    token_saved = Signal()

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("ModelDeck: first-run check")
        self._calls = Calls(client, self)
        self.checks: list[dict] = []
        self.rows: dict[str, CheckRow] = {}
        em = self.fontMetrics().horizontalAdvance("M")

        title = QLabel("Is this machine ready?")
        title.setObjectName("pageTitle")
        sub = QLabel("ModelDeck checks what launching models needs. Each line says what it found and, "
                     "where something is missing, the exact fix (select it or use the copy button).")
        sub.setObjectName("pageSubtitle")
        sub.setWordWrap(True)

        self._list = QWidget()
        self._list.setObjectName("cardsHost")
        self._list_box = QVBoxLayout(self._list)
        self._list_box.setContentsMargins(0, 0, int(em * 0.5), 0)
        self._list_box.setSpacing(int(em * 0.6))
        self._list_box.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self._list)

        self.state = QLabel("Checking…")
        self.state.setProperty("muted", True)
        self.state.setWordWrap(True)

        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("hf_…")
        self.token_edit.setToolTip("Stored by the backend, readable by you only; never shown again.")
        self.token_edit.setClearButtonEnabled(True)
        self.token_edit.returnPressed.connect(self._on_save_token_clicked)
        self.save_token_button = QPushButton("Save token")
        self.save_token_button.clicked.connect(self._on_save_token_clicked)
        self.remove_token_button = QPushButton("Remove")
        self.remove_token_button.clicked.connect(self._on_remove_token_clicked)
        self.token_state = QLabel()
        self.token_state.setProperty("muted", True)
        self.token_state.setWordWrap(True)
        token_row = QHBoxLayout()
        token_row.addWidget(QLabel("Hugging Face token"))
        token_row.addWidget(self.token_edit, 1)
        token_row.addWidget(self.save_token_button)
        token_row.addWidget(self.remove_token_button)

        self.recheck_button = QPushButton(theme.icon("refresh"), "Re-check")
        self.recheck_button.clicked.connect(self.recheck)
        close = QPushButton("Close")
        close.setProperty("primary", True)
        close.setDefault(False)
        close.setAutoDefault(False)
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(self.state, 1)
        buttons.addWidget(self.recheck_button)
        buttons.addWidget(close)

        box = QVBoxLayout(self)
        box.setContentsMargins(int(em * 1.5), int(em * 1.2), int(em * 1.5), int(em * 1.2))
        box.addWidget(title)
        box.addWidget(sub)
        box.addSpacing(int(em * 0.5))
        box.addWidget(scroll, 1)
        box.addSpacing(int(em * 0.5))
        box.addLayout(token_row)
        box.addWidget(self.token_state)
        box.addSpacing(int(em * 0.5))
        box.addLayout(buttons)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        width, height = em * 64, em * 64
        if screen is not None:
            width, height = min(width, int(screen.width() * 0.9)), min(height, int(screen.height() * 0.9))
        self.resize(width, height)
        self.recheck()

    # -- checks -----------------------------------------------------------------------

    def recheck(self) -> None:
        """Ask the backend for the checks again (the answer replaces the list)."""
        self.recheck_button.setEnabled(False)
        self.state.setText("Checking…")
        self._calls.get("/api/setup/checks", self._on_checks_loaded, self._on_checks_failed, timeout_ms=30000)

    def level(self, check_id: str) -> str | None:
        """The level ("pass", "warn", "fail") of a check in the latest answer, or None."""
        for c in self.checks:
            if c.get("id") == check_id:
                return c.get("level")
        return None

    def _on_checks_loaded(self, checks: list) -> None:
        self.recheck_button.setEnabled(True)
        self.checks = list(checks or [])
        while self._list_box.count() > 1:
            item = self._list_box.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.rows = {}
        for check in self.checks:
            row = CheckRow(check)
            self.rows[check.get("id", "")] = row
            self._list_box.insertWidget(self._list_box.count() - 1, row)
        counts = {lvl: sum(c.get("level") == lvl for c in self.checks) for lvl in ("pass", "warn", "fail")}
        if counts["fail"]:
            summary = f"{counts['fail']} to fix before launching models"
        elif counts["warn"]:
            summary = "Ready, with limits (see the warnings)"
        else:
            summary = "All set"
        self.state.setText(f"{summary} · {counts['pass']} of {len(self.checks)} checks passed.")
        has_token = self.level("hf_token") == "pass"
        self.remove_token_button.setEnabled(has_token)
        self.save_token_button.setText("Replace token" if has_token else "Save token")
        self.checks_loaded.emit(self.checks)

    def _on_checks_failed(self, error: ApiError) -> None:
        self.recheck_button.setEnabled(True)
        self.state.setText(f"Could not run the checks: {error}")

    # -- the Hugging Face token -------------------------------------------------------

    def _on_save_token_clicked(self) -> None:
        token = self.token_edit.text().strip()
        if not token:
            self.token_state.setText("Paste a token from https://huggingface.co/settings/tokens first.")
            return
        self._set_token_busy(True)
        self._calls.put("/api/setup/hf-token", {"token": token}, self._on_token_saved, self._on_token_failed)

    def _on_remove_token_clicked(self) -> None:
        self._set_token_busy(True)
        self._calls.delete("/api/setup/hf-token", self._on_token_removed, self._on_token_failed)

    def _on_token_saved(self, _check) -> None:
        self.token_edit.clear()
        self._set_token_busy(False)
        self.token_state.setText("Token stored. Launches of recipes that use HF_TOKEN get it.")
        self.token_saved.emit()
        self.recheck()

    def _on_token_removed(self, _body) -> None:
        self._set_token_busy(False)
        self.token_state.setText("Token removed.")
        self.token_saved.emit()
        self.recheck()

    def _on_token_failed(self, error: ApiError) -> None:
        self._set_token_busy(False)
        self.token_state.setText(f"Not stored: {error}")

    def _set_token_busy(self, busy: bool) -> None:
        for w in (self.token_edit, self.save_token_button, self.remove_token_button):
            w.setEnabled(not busy)

    # -- closing ----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Abort calls in flight (the owner's shutdown calls this)."""
        self._calls.abort_all()
