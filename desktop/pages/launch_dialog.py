"""The Launch dialog: model, served name, GPU with the live fit check, port, on demand (load on request,
unload when idle, pin, memory limit), advanced args/env and the equivalent `docker run` command, then progress."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlencode

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIntValidator
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QFormLayout, QFrame, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QScrollArea, QStackedWidget,
                               QToolButton, QVBoxLayout, QWidget)

from desktop import fonts, theme
from desktop.client import ApiError, BackendClient
from desktop.envnames import is_env_name
from desktop.widgets.calls import Calls
from desktop.formatting import format_bytes
from desktop.lifecycle import mem_limit_value
from desktop.nodes import AUTOMATIC, LOCAL, candidate_text, node_choices
from desktop.widgets.idle_ttl import IdleTtlField
from desktop.widgets.launch_progress import LaunchProgressView

# The backend's rules (backend/launch_plan.py), repeated so the form can say what is wrong while typing.
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,255}$")
LOCAL_PATH_RE = re.compile(r"^/[A-Za-z0-9._\-/:@+]{1,4095}$")
SERVED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,127}$")
FIT_STYLE = {"ok": ("okText", "✓"), "warn": ("warnText", "!"), "too_big": ("errorText", "✕"), "unknown": ("", "?")}


def model_problem(text: str) -> str | None:
    """Why ``text`` is not a valid model id or local path, or None when it is."""
    text = text.strip()
    if not text:
        return "Enter a model id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or a local path."
    if any(c.isspace() for c in text):
        return "No spaces in a model id."
    if ".." in text:
        return "'..' is not allowed."
    if (LOCAL_PATH_RE if text.startswith("/") else MODEL_ID_RE).match(text) is None:
        return "Only letters, digits and . _ - / : @ + are allowed (no shell characters)."
    return None


def served_name_problem(text: str) -> str | None:
    text = text.strip()
    if text and not SERVED_NAME_RE.match(text):
        return "A served name is letters, digits and . _ - / : @ +, starting with a letter or digit."
    return None


def placement_lines(answer: dict, chosen_node: str) -> list[str]:
    """The candidates of a GET /api/placement answer, one a line, the one a launch would use marked ▶."""
    chosen = answer.get("chosen") or {}
    target = (chosen.get("node"), chosen.get("gpu")) if chosen_node == AUTOMATIC else None
    lines = []
    for c in answer.get("candidates") or []:
        here = (c.get("node"), c.get("gpu")) == target if target else c.get("node") == chosen_node
        lines.append(("▶ " if here else "   ") + candidate_text(c))
    if chosen_node == AUTOMATIC and not chosen:
        lines.append("Automatic: the model fits on no machine now.")
    return lines


def parse_env(text: str) -> tuple[dict[str, str], str | None]:
    """KEY=VALUE lines to a dict; the second item names the first bad line."""
    env: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not is_env_name(key.strip()):
            return env, f"Environment line {n} is not KEY=VALUE."
        env[key.strip()] = value
    return env, None


class _FormScroll(QScrollArea):
    """The form; it scrolls only where the screen is too short for it (rows never overlap on a laptop).

    QScrollArea's own size hint is capped at a small size whatever its content: this one asks for
    the whole form, bounded by what the screen can show beside the dialog's title and buttons.
    """

    def sizeHint(self) -> QSize:
        inner = self.widget().sizeHint() if self.widget() is not None else super().sizeHint()
        frame = 2 * self.frameWidth()
        return QSize(inner.width() + frame + self.verticalScrollBar().sizeHint().width(),
                     self._bounded(inner.height() + frame))

    def _bounded(self, height: int) -> int:
        screen = self.screen()
        return min(height, int(screen.availableGeometry().height() * 0.62)) if screen is not None else height

    def eventFilter(self, watched, event) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the form's size changed: the dialog's layout asks again
            window = self.window()
            if hasattr(window, "fit_to_form"):  # after the layout has settled
                QTimer.singleShot(0, window, window.fit_to_form)
        return super().eventFilter(watched, event)


class LaunchDialog(QDialog):
    """Launches one recipe and then follows its progress in place (non-modal; deletes itself on close).

    Signals:
        launched(str): the backend accepted the launch; the deployment id.
        created(str): that launch makes a new deployment (not one that already existed and was
            adopted); the window stops only these when it quits (keep running off).
        show_deployments(): the person asked to see the Deployments page.
    """

    launched = Signal(str)
    created = Signal(str)
    show_deployments = Signal()

    def __init__(self, client: BackendClient, recipe: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.client, self.recipe = client, recipe
        self.deployment_id: str | None = None
        self._calls = Calls(client, self)
        self.setWindowTitle(f"Launch {recipe.get('title') or recipe.get('name')}")
        em = self.fontMetrics().horizontalAdvance("M")
        self.setMinimumWidth(em * 52)

        self.model = QLineEdit(recipe.get("default_model") or "")
        self.model.setPlaceholderText("Hub id, Ollama tag, or /path/in/a/model/folder")
        self.model_error = self._error_label()
        self.served = QLineEdit()
        self.served.setPlaceholderText(recipe.get("default_served_name") or "same as the model")
        self.served_error = self._error_label()
        self.gpu = QComboBox()
        self.gpu_reason = QLabel()
        self.gpu_reason.setProperty("muted", True)
        self.gpu_reason.setWordWrap(True)
        self.fit = QLabel("Checking whether the model fits…")
        self.fit.setWordWrap(True)
        self.port_auto = QCheckBox("Automatic")
        self.port_auto.setChecked(True)
        self.port_auto.setToolTip("Pick a free port on 127.0.0.1")
        self.port = QLineEdit()
        self.port.setValidator(QIntValidator(1, 65535, self.port))
        self.port.setPlaceholderText("1024–65535, e.g. 8080")
        self.port.setToolTip("Host port on 127.0.0.1 that the model server is published on")
        self.port.setEnabled(False)
        self.port_auto.toggled.connect(self._on_port_auto_toggled)
        port_row = QHBoxLayout()
        port_row.addWidget(self.port_auto)
        port_row.addWidget(self.port, 1)
        # On demand (issue 14): what happens when no one uses the model, and what wakes it.
        self.on_demand = QCheckBox("Load on request")
        self.on_demand.setChecked(True)
        self.on_demand.setToolTip("When the model is unloaded (stopped), a /v1 request that names it starts it, "
                                  "waits until it is ready and is then answered.")
        self.pinned = QCheckBox("Pin (never unload)")
        self.pinned.setToolTip("ModelDeck never unloads this model: not when idle, not to make room for another.")
        on_demand_row = QHBoxLayout()
        on_demand_row.addWidget(self.on_demand)
        on_demand_row.addWidget(self.pinned)
        on_demand_row.addStretch(1)
        self.idle_ttl = IdleTtlField()
        self.mem_limit = QLineEdit()
        self.mem_limit.setPlaceholderText("optional, e.g. 2g or 512m")
        self.mem_limit.setToolTip("The container's memory limit (Docker's --memory). For CPU runtimes it is also "
                                  "what the model is counted as needing when models are swapped to make room.")
        self.mem_limit_error = self._error_label()
        self.pinned.toggled.connect(self._on_pinned_toggled)
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.toggled.connect(self._on_advanced_toggled)
        self.args = QPlainTextEdit()
        self.args.setPlaceholderText("Extra server arguments, one per line, e.g.\n--max-model-len\n4096")
        self.env = QPlainTextEdit()
        self.env.setPlaceholderText("KEY=VALUE, one per line" + (
            f" (secrets: {', '.join(recipe['secrets'])})" if recipe.get("secrets") else ""))
        for box in (self.args, self.env):
            box.setFixedHeight(self.fontMetrics().lineSpacing() * 4 + 12)
        # The same launch as a `docker run` line, from POST /api/deployments/plan (nothing is created).
        self.command = QPlainTextEdit()
        self.command.setReadOnly(True)
        self.command.setFont(fonts.fixed_font())
        self.command.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.command.setPlaceholderText("The equivalent docker run command appears here.")
        self.command.setFixedHeight(self.command.fontMetrics().lineSpacing() * 8 + 12)
        self.command.setToolTip("What this launch runs, as one docker run command; secrets appear by name only")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the docker run command to the clipboard")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        self.command_note = QLabel()
        self.command_note.setProperty("muted", True)
        self.command_note.setWordWrap(True)
        command_row = QHBoxLayout()
        command_row.addWidget(self.command_note, 1)
        command_row.addWidget(self.copy_button)
        self.advanced = QWidget()
        adv = QFormLayout(self.advanced)
        adv.setContentsMargins(0, 0, 0, 0)
        adv.addRow("Arguments", self.args)
        adv.addRow("Environment", self.env)
        adv.addRow("docker run", self.command)
        adv.addRow("", command_row)
        self.advanced.hide()

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model", self.model)
        form.addRow("", self.model_error)
        form.addRow("Served name", self.served)
        form.addRow("", self.served_error)
        # Issue 17: where to launch (shown once the backend knows other machines).
        self.node = QComboBox()
        self.node.setObjectName("launchNode")
        self.node.addItem("This machine", LOCAL)
        self.node.setToolTip("The machine to launch on; Automatic: the one with the most memory free now that fits")
        self.placement = QLabel()
        self.placement.setObjectName("placementCandidates")
        self.placement.setProperty("muted", True)
        self.placement.setWordWrap(True)
        self._placement_seq = 0
        self._placement_answer: dict | None = None
        form.addRow("Node", self.node)
        form.addRow("", self.placement)
        form.setRowVisible(self.node, False)
        form.setRowVisible(self.placement, False)
        self._form = form
        form.addRow("GPU", self.gpu)
        form.addRow("", self.gpu_reason)
        form.addRow("Fit", self.fit)
        form.addRow("Port", port_row)
        form.addRow("On demand", on_demand_row)
        form.addRow("Unload when idle", self.idle_ttl)
        form.addRow("Memory limit", self.mem_limit)
        form.addRow("", self.mem_limit_error)
        form.addRow(self.advanced_toggle)
        form.addRow(self.advanced)
        self.error = self._error_label()
        form_page = QWidget()
        fl = QVBoxLayout(form_page)
        fl.setContentsMargins(0, 0, 0, 0)
        fl.addLayout(form)
        fl.addStretch(1)
        fl.addWidget(self.error)

        self.progress = LaunchProgressView()
        self.progress.finished.connect(self._on_progress_finished)
        self._form_scroll = form_scroll = _FormScroll()
        form_scroll.setWidgetResizable(True)
        form_scroll.setFrameShape(QFrame.Shape.NoFrame)
        form_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        form_scroll.setWidget(form_page)
        self.pages = QStackedWidget()
        self.pages.addWidget(form_scroll)
        self.pages.addWidget(self.progress)

        title = QLabel(recipe.get("title") or recipe.get("name") or "")
        title.setObjectName("pageTitle")
        sub = QLabel(recipe.get("description") or "")
        sub.setProperty("muted", True)
        sub.setWordWrap(True)

        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.reject)
        self.edit_button = QPushButton("Edit and retry")
        self.edit_button.clicked.connect(self._on_edit_clicked)
        self.show_button = QPushButton("Show in Deployments")
        self.show_button.clicked.connect(self._on_show_clicked)
        self.launch_button = QPushButton(theme.icon("launch", "accent_text"), "Launch")
        self.launch_button.setProperty("primary", True)
        self.launch_button.setDefault(True)
        self.launch_button.clicked.connect(self._on_launch_clicked)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.edit_button, self.show_button, self.cancel_button, self.launch_button):
            buttons.addWidget(b)
        self.edit_button.hide()
        self.show_button.hide()

        box = QVBoxLayout(self)
        box.addWidget(title)
        box.addWidget(sub)
        box.addSpacing(8)
        box.addWidget(self.pages, 1)
        box.addLayout(buttons)

        self._fit_timer = QTimer(self)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(400)
        self._fit_timer.timeout.connect(self._on_fit_timer_timeout)
        self.model.textChanged.connect(self._on_form_changed)
        self.served.textChanged.connect(self._on_form_changed)
        self.gpu.currentIndexChanged.connect(self._on_form_changed)
        # The command follows every field, at most one plan call per pause in typing.
        self._plan_timer = QTimer(self)
        self._plan_timer.setSingleShot(True)
        self._plan_timer.setInterval(300)
        self._plan_timer.timeout.connect(self._on_plan_timer_timeout)
        self._plan_seq = 0
        for edit in (self.model, self.served, self.port):
            edit.textChanged.connect(self._on_plan_inputs_changed)
        for box in (self.args, self.env):
            box.textChanged.connect(self._on_plan_inputs_changed)
        self.gpu.currentIndexChanged.connect(self._on_plan_inputs_changed)
        self.port_auto.toggled.connect(self._on_plan_inputs_changed)
        self.mem_limit.textChanged.connect(self._on_form_changed)
        self.mem_limit.textChanged.connect(self._on_plan_inputs_changed)
        self.idle_ttl.changed.connect(self._on_plan_inputs_changed)
        self.on_demand.toggled.connect(self._on_plan_inputs_changed)
        self.pinned.toggled.connect(self._on_plan_inputs_changed)
        self._fill_gpus(None)
        self._calls.get("/api/engine", self._on_engine_loaded, self._on_engine_failed)
        self.node.currentIndexChanged.connect(self._on_node_current_index_changed)
        self.node.currentIndexChanged.connect(self._on_plan_inputs_changed)
        self._calls.get("/api/nodes", self._on_nodes_loaded)  # a backend before issue 17 answers 404: no row
        self._on_form_changed()

    @staticmethod
    def _error_label() -> QLabel:
        label = QLabel()
        label.setObjectName("errorText")
        label.setWordWrap(True)
        label.hide()
        return label

    # -- the form ---------------------------------------------------------------------

    def _fill_gpus(self, engine: dict | None) -> None:
        need = self.recipe.get("gpu_need", "none")
        self.gpu.blockSignals(True)
        self.gpu.clear()
        gpus = (engine or {}).get("gpus") or []
        if need == "none":
            self.gpu.addItem("No GPU: this runtime runs on the CPU", None)
            reason = ""
        elif not gpus:
            self.gpu.addItem("No GPU available", [] if need == "optional" else None)
            why = "Checking for GPUs…" if engine is None else (engine.get("gpu_reason") or "No NVIDIA GPU found.")
            reason = (f"{why} It will run on the CPU." if need == "optional"
                      else f"{why} This runtime needs an NVIDIA GPU.")
        else:
            self.gpu.addItem("Automatic (all GPUs)", None)
            for g in gpus:
                free = g.get("memory_free_bytes")
                label = f"GPU {g['index']} · {g.get('name') or 'NVIDIA GPU'}"
                if free is not None:
                    label += f" · {format_bytes(free)} free of {format_bytes(g.get('memory_total_bytes'))}"
                self.gpu.addItem(label, [str(g["index"])])
            if need == "optional":
                self.gpu.addItem("None: run on the CPU", [])
            reason = "" if engine.get("gpu_runtime") else (engine.get("hint") or "")
        self.gpu.setEnabled(self.gpu.count() > 1)
        self.gpu_reason.setText(reason)
        self.gpu_reason.setVisible(bool(reason))
        self.gpu.blockSignals(False)

    def _on_engine_loaded(self, engine: dict) -> None:
        self._fill_gpus(engine)
        self._fit_timer.start()

    def _on_engine_failed(self, error: ApiError) -> None:
        self.gpu_reason.setText(f"Could not ask the backend about GPUs: {error.message}")
        self.gpu_reason.show()

    def fit_to_form(self, shrink: bool = False) -> None:
        """Taller by what the form lacks (a GPU note or an error line arrived, Advanced opened), within
        the screen; with ``shrink`` also shorter when it needs less. Past the screen the form scrolls.

        (``adjustSize()`` stops at two thirds of the screen, which left the form scrolling on a
        screen with room to spare.)
        """
        form = self._form_scroll
        screen = self.screen()
        if screen is None or self.pages.currentWidget() is not form:
            return
        lacking = form.widget().sizeHint().height() - form.viewport().height()
        if lacking > 0 or (shrink and lacking < 0):
            height = min(self.height() + lacking, int(screen.availableGeometry().height() * 0.95))
            self.resize(self.width(), max(height, self.minimumSizeHint().height()))

    def showEvent(self, event) -> None:
        super().showEvent(event)
        QTimer.singleShot(0, self, self.fit_to_form)

    def _default_served_name(self, model: str) -> str:
        """What the backend will call the model when the served name is left empty (its rule)."""
        if self.recipe.get("served_name_is_model"):
            return model or "same as the model"
        if model and model == (self.recipe.get("default_model") or "") and self.recipe.get("default_served_name"):
            return self.recipe["default_served_name"]
        if model.startswith("/"):
            return PurePosixPath(model).stem or "same as the model"
        return model or "same as the model"

    def _on_advanced_toggled(self, on: bool) -> None:
        self.advanced.setVisible(on)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.fit_to_form(shrink=True)
        if on:
            self._plan_timer.start()

    # -- the docker run command -------------------------------------------------------

    def _on_plan_inputs_changed(self, *_args) -> None:
        if self.advanced.isVisible():
            self._plan_timer.start()

    def _on_plan_timer_timeout(self) -> None:
        body, problem = self.request_body()
        self._plan_seq += 1
        if body is None:
            self._show_command("", problem or "")
            return
        seq = self._plan_seq
        self._calls.post("/api/deployments/plan", body, lambda answer: self._on_plan_answer(seq, answer),
                         lambda error: self._on_plan_failed(seq, error))

    def _on_plan_answer(self, seq: int, answer: dict) -> None:
        if seq == self._plan_seq:  # an answer to an older form is dropped
            port = (" Docker picks a free port on 127.0.0.1 when the container starts; ModelDeck's /v1 address "
                    "stays the same.") if answer.get("host_port_automatic") else ""
            self._show_command(answer.get("docker_run", ""), " ".join(answer.get("warnings") or []) + port)

    def _on_plan_failed(self, seq: int, error: ApiError) -> None:
        if seq == self._plan_seq:
            self._show_command("", f"{error.message} {error.hint or ''}".strip())

    def _show_command(self, text: str, note: str) -> None:
        self.command.setPlainText(text)
        self.copy_button.setEnabled(bool(text))
        self.command_note.setText(note.strip())

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.command.toPlainText())
        self.command_note.setText("Copied to the clipboard.")

    def _on_port_auto_toggled(self, automatic: bool) -> None:
        self.port.setEnabled(not automatic)
        if not automatic:
            self.port.setFocus()

    def _on_pinned_toggled(self, pinned: bool) -> None:
        # A pinned model is never unloaded, so an idle time-out would mean nothing.
        self.idle_ttl.setEnabled(not pinned)
        self.idle_ttl.setToolTip("A pinned model is never unloaded." if pinned else "")

    def _on_form_changed(self, *_args) -> None:
        self.served.setPlaceholderText(self._default_served_name(self.model.text().strip()))
        problems = {self.model: (self.model_error, model_problem(self.model.text())),
                    self.served: (self.served_error, served_name_problem(self.served.text())),
                    self.mem_limit: (self.mem_limit_error, mem_limit_value(self.mem_limit.text())[1])}
        for edit, (label, problem) in problems.items():
            label.setText(problem or "")
            label.setVisible(bool(problem))
            if bool(edit.property("invalid")) != bool(problem):
                edit.setProperty("invalid", bool(problem))
                edit.style().unpolish(edit)
                edit.style().polish(edit)
        self.launch_button.setEnabled(not any(p for _, p in problems.values()))
        self._fit_timer.start()

    def _on_fit_timer_timeout(self) -> None:
        if model_problem(self.model.text()):
            self._show_fit("unknown", "Enter a valid model to check whether it fits.")
            return
        self._ask_placement()
        gpus = self.gpu.currentData()
        body = {"recipe": self.recipe["name"], "model": self.model.text().strip(),
                "gpu": int(gpus[0]) if gpus and gpus[0].isdigit() else None}
        self._calls.post("/api/fit-check", body, self._on_fit_answer, self._on_fit_failed)

    def _on_fit_answer(self, answer: dict) -> None:
        self._show_fit(answer.get("level", "unknown"), answer.get("message", ""))

    def _on_fit_failed(self, error: ApiError) -> None:
        self._show_fit("unknown", f"Fit check unavailable: {error.message}")

    def _show_fit(self, level: str, message: str) -> None:
        name, mark = FIT_STYLE.get(level, FIT_STYLE["unknown"])
        self.fit.setObjectName(name)
        self.fit.setProperty("muted", level == "unknown")
        self.fit.style().unpolish(self.fit)
        self.fit.style().polish(self.fit)
        self.fit.setText(f"{mark}  {message}")
        self.fit.setProperty("level", level)

    def request_body(self) -> tuple[dict | None, str | None]:
        """The LaunchRequest the form describes, or None and what is wrong."""
        mem_limit, mem_problem = mem_limit_value(self.mem_limit.text())
        problem = model_problem(self.model.text()) or served_name_problem(self.served.text()) or mem_problem
        env, env_problem = parse_env(self.env.toPlainText())
        port = self.port.text()
        if not self.port_auto.isChecked() and not (port.isdigit() and 1024 <= int(port) <= 65535):
            problem = problem or "Give a port from 1024 to 65535, or tick Automatic."
        if problem or env_problem:
            return None, problem or env_problem
        body: dict = {"recipe": self.recipe["name"], "model": self.model.text().strip(), "env": env,
                      "args": [a.strip() for a in self.args.toPlainText().splitlines() if a.strip()]}
        if self.served.text().strip():
            body["served_name"] = self.served.text().strip()
        gpus = self.gpu.currentData()
        node = self.node.currentData() or LOCAL
        if gpus is not None and node == LOCAL:  # the GPU list is this machine's
            body["gpus"] = gpus
        if node != LOCAL:
            body["node"] = node
        if not self.port_auto.isChecked():
            body["port"] = int(self.port.text())
        # Said only where they differ from the API's defaults (on_demand true, idle_ttl_s null, pinned false):
        # a launch that adopts an existing deployment applies the request's values, given or default, so the
        # form's state reaches the backend either way, and a plain launch's body stays as it always was.
        if not self.on_demand.isChecked():
            body["on_demand"] = False
        if self.pinned.isChecked():
            body["pinned"] = True
        elif self.idle_ttl.value() is not None:
            body["idle_ttl_s"] = self.idle_ttl.value()
        if mem_limit is not None:
            body["mem_limit"] = mem_limit
        return body, None

    # -- other machines (issue 17) -----------------------------------------------------

    def _on_nodes_loaded(self, answer) -> None:
        nodes = (answer or {}).get("nodes") or [] if isinstance(answer, dict) else []
        if not [n for n in nodes if n.get("name") != LOCAL]:
            return  # this machine only: no choice to make
        chosen = self.node.currentData()
        self.node.blockSignals(True)
        self.node.clear()
        for label, value in node_choices(nodes, with_auto=True):
            self.node.addItem(label, value)
        self.node.setCurrentIndex(max(0, self.node.findData(chosen)))
        self.node.blockSignals(False)
        self._form.setRowVisible(self.node, True)
        self._ask_placement()
        QTimer.singleShot(0, self, self.fit_to_form)

    def _on_node_current_index_changed(self, _index: int) -> None:
        local = (self.node.currentData() or LOCAL) == LOCAL
        # The GPU choice and the fit line are this machine's; another's are in the candidates.
        self.gpu.setEnabled(local and self.gpu.count() > 1)
        self.fit.setEnabled(local)
        if self._placement_answer is not None:
            self._on_placement(self._placement_seq, self._placement_answer)

    def _ask_placement(self) -> None:
        """Each machine's fit for this model, by its own live figures (GET /api/placement)."""
        if self.node.count() <= 1 or model_problem(self.model.text()):
            return
        self._placement_seq += 1
        seq = self._placement_seq
        query = urlencode({"recipe": self.recipe["name"], "model": self.model.text().strip()})
        self._calls.get(f"/api/placement?{query}", lambda a: self._on_placement(seq, a),
                        lambda e: self._on_placement_failed(seq, e), timeout_ms=30000)

    def _on_placement(self, seq: int, answer) -> None:
        if seq != self._placement_seq or not isinstance(answer, dict):
            return
        self._placement_answer = answer
        self.placement.setText("\n".join(placement_lines(answer, self.node.currentData() or LOCAL)))
        self._form.setRowVisible(self.placement, True)
        QTimer.singleShot(0, self, self.fit_to_form)

    def _on_placement_failed(self, seq: int, error: ApiError) -> None:
        if seq == self._placement_seq:
            self.placement.setText(f"Could not ask the machines: {error.message}")
            self._form.setRowVisible(self.placement, True)

    # -- launching --------------------------------------------------------------------

    def _on_launch_clicked(self) -> None:
        body, problem = self.request_body()
        if body is None:
            self._show_error(problem)
            return
        self.error.hide()
        self.launch_button.setEnabled(False)
        self.launch_button.setText("Launching…")
        self._calls.post("/api/deployments", body, self._on_launch_accepted, self._on_launch_failed,
                         timeout_ms=60000)

    def _on_launch_failed(self, error: ApiError) -> None:
        self.launch_button.setEnabled(True)
        self.launch_button.setText("Launch")
        self._show_error(f"{error.message} {error.hint or ''}".strip())

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def _on_launch_accepted(self, answer: dict) -> None:
        self.deployment_id = answer["id"]
        self.setWindowTitle(f"Launching {answer['deployment'].get('served_name') or answer['id']}")
        self.pages.setCurrentWidget(self.progress)
        self.launch_button.hide()
        self.cancel_button.setText("Close")
        self.cancel_button.setToolTip("Close this window; the launch goes on.")
        self.show_button.show()
        self.progress.follow(self.client, answer["events_url"])
        if not answer.get("existing"):
            self.created.emit(answer["id"])
        self.launched.emit(answer["id"])

    def _on_progress_finished(self, phase: str) -> None:
        self.edit_button.setVisible(phase == "failed")
        self.cancel_button.setText("Close")

    def _on_edit_clicked(self) -> None:
        self.progress.shutdown()
        self.pages.setCurrentIndex(0)
        self.edit_button.hide()
        self.show_button.hide()
        self.launch_button.show()
        self.launch_button.setEnabled(True)
        self.launch_button.setText("Launch")
        self.cancel_button.setText("Cancel")

    def _on_show_clicked(self) -> None:
        self.show_deployments.emit()
        self.accept()

    def done(self, result: int) -> None:
        self.shutdown()
        super().done(result)

    def shutdown(self) -> None:
        """Stop the progress stream and any call in flight (the launch goes on in the backend)."""
        self._fit_timer.stop()
        self._plan_timer.stop()
        self._calls.abort_all()
        self.progress.shutdown()
