"""The Discover page: search the Hugging Face Hub, open a model's quantizations with their fit per device, download
them into the runtimes' cache with progress, and launch one with the runtime and model preselected."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMenu,
                               QPushButton, QSplitter, QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from desktop import theme
from desktop.client import ApiError, BackendClient, SseStream
from desktop.library import hub
from desktop.library.downloads import ENDS, LIVE, Downloads, fraction
from desktop.widgets.calls import Calls
from desktop.widgets.downloads_panel import DownloadsPanel
from desktop.widgets.fit_badges import FitBadges

#: After a download's event stream breaks off (a backend restart: the job resumes), read it again this much later.
FOLLOW_RETRY_MS = 2000
#: A search waits this long after the last key typed (each search is a Hub call).
SEARCH_DELAY_MS = 500
HUB_TIMEOUT_MS = 30000  # the backend asks the Hub, which may be slow
EMPTY_DOWNLOADS = "No downloads yet. Pick a model and a quantization, then Download."


class DiscoverPage(QWidget):
    """Hub search (results) and a model page (variants, Download, Launch) over a downloads panel.

    Signals:
        results_loaded(list): a search answered (the HubModels shown).
        model_loaded(dict): a model page is shown (the HubModel detail).
        model_failed(object): a model page could not be read (an ApiError; a gated model without access is one).
        download_changed(dict): a download job changed (its Download JSON, from an event or an answer).
        downloads_loaded(list): ``GET /api/downloads`` answered.
        launch_requested(str, str): Launch was clicked: the recipe and the model to preselect.
        message(str, bool): a line for the person (text, is_error).
    """

    results_loaded = Signal(list)
    model_loaded = Signal(dict)
    model_failed = Signal(object)
    download_changed = Signal(dict)
    downloads_loaded = Signal(list)
    launch_requested = Signal(str, str)
    message = Signal(str, bool)

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self._client = client
        self._calls = Calls(client, self)
        self.results: list[dict] = []
        self.model: dict | None = None
        self.variants: list[dict] = []
        self.downloads = Downloads()
        self._streams: dict[str, SseStream] = {}
        self._search_seq = 0
        self._model_seq = 0
        self._retry = QTimer(self)
        self._retry.setSingleShot(True)
        self._retry.setInterval(FOLLOW_RETRY_MS)
        self._retry.timeout.connect(self._on_retry_timeout)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.search)
        self._build()
        self._on_theme_changed(theme.notifier().scheme)
        theme.notifier().changed.connect(self._on_theme_changed)

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        em = self.fontMetrics().horizontalAdvance("M")
        title = QLabel("Discover")
        title.setObjectName("pageTitle")
        subtitle = QLabel("Search the Hugging Face Hub, see which quantization fits the memory free now, and "
                          "download it into the cache the runtimes read.")
        subtitle.setObjectName("pageSubtitle")
        subtitle.setWordWrap(True)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search models, e.g. qwen2.5 0.5b instruct")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.returnPressed.connect(self.search)
        self.search_edit.textEdited.connect(self._on_search_edit_text_edited)
        self.format_combo = QComboBox()
        for text, value in hub.FORMATS:
            self.format_combo.addItem(text, value)
        self.format_combo.setToolTip("GGUF runs on llama.cpp and Ollama; safetensors on vLLM, SGLang and TGI")
        self.format_combo.activated.connect(self._on_filter_activated)
        self.sort_combo = QComboBox()
        for text, value in hub.SORTS:
            self.sort_combo.addItem(text, value)
        self.sort_combo.activated.connect(self._on_filter_activated)
        self.search_button = QPushButton("Search")
        self.search_button.setProperty("primary", True)
        self.search_button.clicked.connect(self.search)
        bar = QHBoxLayout()
        bar.addWidget(self.search_edit, 1)
        bar.addWidget(self.format_combo)
        bar.addWidget(self.sort_combo)
        bar.addWidget(self.search_button)

        self.stack = QStackedWidget()
        self.stack.addWidget(self._build_results())
        self.stack.addWidget(self._build_model_page())

        self.downloads_panel = DownloadsPanel()
        self.downloads_panel.cancel_requested.connect(self.cancel_download)
        downloads_box = QGroupBox("Downloads")
        dl = QVBoxLayout(downloads_box)
        dl.addWidget(self.downloads_panel)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.stack)
        split.addWidget(downloads_box)
        split.setStretchFactor(0, 1)
        split.setChildrenCollapsible(False)
        split.setSizes([em * 34, em * 15])
        downloads_box.setMinimumHeight(em * 8)

        box = QVBoxLayout(self)
        box.setContentsMargins(em * 2, em * 2, em * 2, em)
        box.setSpacing(em // 2)
        box.addWidget(title)
        box.addWidget(subtitle)
        box.addLayout(bar)
        box.addWidget(split, 1)

    def _build_results(self) -> QWidget:
        self.results_state = QLabel("Type a few words and press Enter to search the Hub.")
        self.results_state.setProperty("muted", True)
        self.results_state.setWordWrap(True)
        self.results_table = _table(hub.RESULT_COLUMNS)
        self.results_table.cellClicked.connect(self._on_results_table_cell_clicked)
        self.results_table.cellActivated.connect(self._on_results_table_cell_clicked)
        page = QWidget()
        box = QVBoxLayout(page)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.results_state)
        box.addWidget(self.results_table, 1)
        return page

    def _build_model_page(self) -> QWidget:
        self.back_button = QPushButton("← Results")
        self.back_button.setToolTip("Back to the search results")
        self.back_button.clicked.connect(self.show_results)
        self.model_title = QLabel()
        self.model_title.setObjectName("cardTitle")
        self.model_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head = QHBoxLayout()
        head.addWidget(self.back_button)
        head.addWidget(self.model_title, 1)
        self.model_summary = QLabel()
        self.model_summary.setProperty("muted", True)
        self.model_summary.setWordWrap(True)
        self.model_note = QLabel()  # gated, not servable, or why the page could not be read
        self.model_note.setWordWrap(True)
        self.model_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_note.setOpenExternalLinks(True)
        self.model_note.hide()
        self.variants_table = _table(hub.VARIANT_COLUMNS)
        self.variants_table.itemSelectionChanged.connect(self._on_variants_table_item_selection_changed)
        self.download_button = QPushButton("Download")
        self.download_button.setProperty("primary", True)
        self.download_button.clicked.connect(self.download_selected)
        self.launch_button = QPushButton("Launch…")
        self.launch_button.setToolTip("Open the Launch dialog with this quantization's runtime and model filled in")
        self.launch_button.clicked.connect(self.launch_selected)
        # The other runtimes that serve the variant (Ollama beside llama.cpp; SGLang and TGI beside vLLM).
        self.launch_menu = QMenu(self)
        self.launch_other = QPushButton("Other runtime")
        self.launch_other.setToolTip("Launch this quantization on another runtime that serves it")
        self.launch_other.setMenu(self.launch_menu)
        self.action_note = QLabel()
        self.action_note.setWordWrap(True)
        self.action_note.setProperty("muted", True)
        actions = QHBoxLayout()
        actions.addWidget(self.action_note, 1)
        actions.addWidget(self.download_button)
        actions.addWidget(self.launch_button)
        actions.addWidget(self.launch_other)
        page = QWidget()
        box = QVBoxLayout(page)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(head)
        box.addWidget(self.model_summary)
        box.addWidget(self.model_note)
        box.addWidget(self._build_token_row())
        box.addWidget(self.variants_table, 1)
        box.addLayout(actions)
        self._update_actions()
        return page

    def _build_token_row(self) -> QWidget:
        """Where a gated model's refusal can be answered at once: save a Hugging Face token, then read it again."""
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("hf_… (a token with read access, from huggingface.co/settings/tokens)")
        self.token_edit.returnPressed.connect(self.save_token)
        self.token_button = QPushButton("Save token and retry")
        self.token_button.setToolTip("Stored by the backend in an owner-only file, never shown again; the same token "
                                     "Help → First-run check saves")
        self.token_button.clicked.connect(self.save_token)
        self.token_row = QWidget()
        row = QHBoxLayout(self.token_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Hugging Face token"))
        row.addWidget(self.token_edit, 1)
        row.addWidget(self.token_button)
        self.token_row.hide()
        return self.token_row

    def save_token(self) -> None:
        """Store the token typed here (PUT /api/setup/hf-token), then read the gated model's page again."""
        token = self.token_edit.text().strip()
        repo_id = self.model_title.text()
        if not token or not repo_id:
            return
        self.token_button.setEnabled(False)
        self._calls.put("/api/setup/hf-token", {"token": token}, lambda _a: self._on_token_saved(repo_id),
                        self._on_token_failed)

    def _on_token_saved(self, repo_id: str) -> None:
        self.token_button.setEnabled(True)
        self.token_edit.clear()
        self.message.emit("Hugging Face token saved", False)
        self.open_model(repo_id)

    def _on_token_failed(self, error: ApiError) -> None:
        self.token_button.setEnabled(True)
        self._show_error(self.model_note, f"The token was not saved: {error}")

    def _on_theme_changed(self, _scheme: str) -> None:
        self.search_button.setIcon(theme.icon("search", "accent_text"))
        self.launch_button.setIcon(theme.icon("launch", "text"))

    # ------------------------------------------------------------------ search

    def refresh(self) -> None:
        """The downloads the backend holds (those started before this window opened too), and the model page's
        fit verdicts again (they are against the memory free now)."""
        self._list_downloads()
        if self.model is not None and self.stack.currentIndex() == 1:
            self._reload_model()

    def _list_downloads(self) -> None:
        self._calls.get("/api/downloads", self._on_downloads_listed, self._on_downloads_list_failed)

    def _on_search_edit_text_edited(self, _text: str) -> None:
        self._search_timer.start()

    def _on_filter_activated(self, _index: int) -> None:
        if self.search_edit.text().strip() or self.results:
            self.search()

    def search(self, query: str | None = None) -> None:
        """Ask the Hub (through the backend) for models matching the box and the filters."""
        if isinstance(query, str):
            self.search_edit.setText(query)
        self._search_timer.stop()
        self._search_seq += 1
        seq = self._search_seq
        path = hub.search_path(self.search_edit.text(), self.format_combo.currentData(),
                               self.sort_combo.currentData())
        self.results_state.setText("Searching the Hub…")
        self.results_state.setObjectName("")
        self._repolish(self.results_state)
        self.results_state.show()
        self.show_results()
        self._calls.get(path, lambda a: self._on_search_answered(seq, a), lambda e: self._on_search_failed(seq, e),
                        timeout_ms=HUB_TIMEOUT_MS)

    def _on_search_answered(self, seq: int, answer: dict) -> None:
        if seq != self._search_seq:
            return  # an older search answered late
        self.results = list(answer.get("results") or [])
        table = self.results_table
        table.setRowCount(len(self.results))
        for r, model in enumerate(self.results):
            for c, text in enumerate(hub.result_cells(model)):
                item = QTableWidgetItem(text)
                if c in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 4 and model.get("gated"):
                    item.setToolTip(hub.gated_note(model))
                if c == 0 and model.get("pipeline_tag"):
                    item.setToolTip(f"{model['pipeline_tag']} · {', '.join(model.get('formats') or [])}")
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        where = answer.get("endpoint") or "the Hub"
        self.results_state.setText(f"{len(self.results)} model{'s' * (len(self.results) != 1)} from {where}. "
                                   "Click one to see its quantizations and what fits."
                                   if self.results else f"Nothing on {where} matches. Try fewer words or "
                                   "another format.")
        self.results_loaded.emit(self.results)

    def _on_search_failed(self, seq: int, error: ApiError) -> None:
        if seq != self._search_seq:
            return
        self._show_error(self.results_state, f"Search failed: {error}")

    def _on_results_table_cell_clicked(self, row: int, _column: int) -> None:
        if 0 <= row < len(self.results):
            self.open_model(self.results[row]["repo_id"])

    def show_results(self) -> None:
        self.stack.setCurrentIndex(0)

    # ------------------------------------------------------------------ a model's page

    def open_model(self, repo_id: str) -> None:
        """Show a model's page: its variants with the fit per device, read from the backend."""
        self._model_seq += 1
        seq = self._model_seq
        self.model, self.variants = None, []
        self.model_title.setText(repo_id)
        self.model_summary.setText("Reading the model's files and checking what fits…")
        self.model_note.hide()
        self.token_row.hide()
        self.action_note.setText("")
        self.variants_table.setRowCount(0)
        self.stack.setCurrentIndex(1)
        self._update_actions()
        self._calls.get(hub.model_path(repo_id), lambda a: self._on_model_answered(seq, a),
                        lambda e: self._on_model_failed(seq, repo_id, e), timeout_ms=HUB_TIMEOUT_MS)

    def _on_model_answered(self, seq: int, model: dict) -> None:
        if seq != self._model_seq:
            return
        selected = self._selected_variant_id()
        self.model = model
        self.variants = list(model.get("variants") or [])
        self.model_title.setText(model.get("repo_id", ""))
        self.model_summary.setText(hub.model_summary(model))
        notes = []
        if not model.get("servable", True):
            notes.append(("errorText", model.get("message") or "No file of this repository can be served."))
        gated = hub.gated_access_note(model)
        if gated:
            notes.append(("warnText", gated))
        if notes:
            self.model_note.setText("\n".join(text for _, text in notes))
            self.model_note.setObjectName(notes[0][0])
            self._repolish(self.model_note)
            self.model_note.show()
        else:
            self.model_note.hide()
        table = self.variants_table
        table.setRowCount(len(self.variants))
        for r, variant in enumerate(self.variants):
            cells = hub.variant_cells(variant)
            for c, text in enumerate(cells):
                item = QTableWidgetItem("" if c == 2 else text)
                if c == 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 2:  # the badges are a widget over this cell; the item keeps their words for a screen reader
                    item.setToolTip("\n".join(b.tooltip for b in hub.fit_badges(variant)))
                    item.setData(Qt.ItemDataRole.AccessibleTextRole, text)
                if c == 4 and variant.get("downloaded"):
                    item.setToolTip("In the Hugging Face cache the runtimes read")
                table.setItem(r, c, item)
            table.setCellWidget(r, 2, FitBadges(hub.fit_badges(variant)))
        table.resizeColumnsToContents()
        badges = [table.cellWidget(r, 2) for r in range(table.rowCount())]
        table.setColumnWidth(2, max([table.columnWidth(2)] + [b.sizeHint().width() for b in badges if b]))
        table.horizontalHeader().setStretchLastSection(False)  # stretch again over the new widths
        table.horizontalHeader().setStretchLastSection(True)
        ids = [v.get("id") for v in self.variants]
        row = ids.index(selected) if selected in ids else hub.best_variant(self.variants)
        if row >= 0:
            table.selectRow(row)
        self._update_actions()
        self.model_loaded.emit(model)

    def _on_model_failed(self, seq: int, repo_id: str, error: ApiError) -> None:
        if seq != self._model_seq:
            return
        found = next((r for r in self.results if r.get("repo_id") == repo_id), None)
        self.model_summary.setText(hub.model_summary(found) if found else repo_id)
        if error.code in ("hub_gated", "hub_token_invalid"):
            # Gated, and no token (or one without access, or one the Hub refuses) is saved: say so before anything
            # is downloaded, and take a token here.
            self.model_note.setText(f"{error.message} {error.hint or ''}".strip())
            self.model_note.setObjectName("warnText")
            self._repolish(self.model_note)
            self.model_note.show()
            self.action_note.setText("Save a token with access to it in the field above; the page is read again "
                                     "with it.")
            self.token_row.show()
        else:
            self._show_error(self.model_note, str(error))
        self.model_failed.emit(error)
        self._update_actions()

    def _selected_variant_id(self) -> str | None:
        variant = self.selected_variant()
        return variant.get("id") if variant else None

    def selected_variant(self) -> dict | None:
        rows = self.variants_table.selectionModel().selectedRows()
        if not rows or not 0 <= rows[0].row() < len(self.variants):
            return None
        return self.variants[rows[0].row()]

    def select_variant(self, variant_id: str) -> None:
        ids = [v.get("id") for v in self.variants]
        if variant_id in ids:
            self.variants_table.selectRow(ids.index(variant_id))

    def _on_variants_table_item_selection_changed(self) -> None:
        self._update_actions()

    def _update_actions(self) -> None:
        """Download and Launch follow the selected variant and its download job."""
        variant = self.selected_variant()
        model = self.model or {}
        job = self.downloads.for_variant(model.get("repo_id"), variant.get("id")) if variant else None
        live = job is not None and job.get("state") in LIVE
        self.download_button.setEnabled(variant is not None and model.get("servable", True) and not live)
        self.launch_button.setEnabled(variant is not None and bool(variant.get("launch")))
        self._fill_launch_menu(variant)
        if variant is None:
            self.download_button.setText("Download")
            if self.model is not None:
                self.action_note.setText("")
            return
        if live:
            part = fraction(job)
            self.download_button.setText("Downloading…" if part is None else f"Downloading… {part:.0%}")
        else:
            self.download_button.setText("Download again" if variant.get("downloaded") else "Download")
        launch = variant.get("launch") or {}
        note = (f"Launch opens {hub.RUNTIME_NAMES.get(launch.get('recipe'), launch.get('recipe'))} with "
                f"{launch.get('model')}." if launch else "No runtime here serves this variant.")
        if variant.get("downloaded"):
            note = "Downloaded. " + note
        elif model.get("gated"):
            note = "Gated: accept the licence on the Hub and save a token first (see above). " + note
        self.action_note.setText(note)
        self.download_button.setToolTip(hub.gated_note(model) or "Download into the Hugging Face cache")

    # ------------------------------------------------------------------ download and launch

    def download_selected(self) -> None:
        """Start (or join) the download of the selected variant; its progress shows in the panel."""
        variant = self.selected_variant()
        if self.model is None or variant is None:
            return
        body = {"repo_id": self.model["repo_id"], "revision": "main", "variant": variant.get("id")}
        self.download_button.setEnabled(False)
        self.download_button.setText("Starting…")
        self._calls.post("/api/downloads", body, self._on_download_started, self._on_download_refused,
                         timeout_ms=HUB_TIMEOUT_MS)

    def _on_download_started(self, job: dict) -> None:
        self._apply(job)
        self.message.emit(f"Downloading {job.get('repo_id')}{' ' + job['variant'] if job.get('variant') else ''} "
                          f"into {job.get('target') or 'the cache'}", False)

    def _on_download_refused(self, error: ApiError) -> None:
        self._show_error(self.model_note, f"Download refused: {error}")
        self.message.emit(f"Download refused: {error.message}", True)
        self._update_actions()

    def cancel_download(self, job_id: str) -> None:
        """Cancel a job (its partial files are removed); the event stream reports the end."""
        self._calls.delete(f"/api/downloads/{job_id}", lambda _a: self._on_cancelled(job_id),
                           lambda e: self.message.emit(f"Could not cancel: {e}", True))

    def _on_cancelled(self, job_id: str) -> None:
        self._calls.get(f"/api/downloads/{job_id}", self._apply)

    def _fill_launch_menu(self, variant: dict | None) -> None:
        others = hub.other_launches(variant or {})
        self.launch_menu.clear()
        for launch in others:
            action = self.launch_menu.addAction(hub.launch_label(launch))
            action.triggered.connect(lambda _checked=False, launch=launch:
                                     self.launch_requested.emit(launch["recipe"], launch["model"]))
        self.launch_other.setVisible(bool(others))

    def launch_selected(self) -> None:
        """Ask for the Launch dialog with the selected variant's runtime and model (the window opens it)."""
        variant = self.selected_variant()
        launch = (variant or {}).get("launch") or {}
        if launch.get("recipe") and launch.get("model"):
            self.launch_requested.emit(launch["recipe"], launch["model"])

    # ------------------------------------------------------------------ downloads

    def _on_downloads_listed(self, answer: dict) -> None:
        jobs = list(answer.get("downloads") or [])
        self.downloads_panel.empty.setText(EMPTY_DOWNLOADS)
        for job in jobs:
            self.downloads.update(job)
        listed = {j.get("id") for j in jobs}
        for job_id in [i for i in self.downloads.jobs if i not in listed and i not in self._streams]:
            del self.downloads.jobs[job_id]  # forgotten by the backend
        self._show_downloads()
        self._follow_live()
        self.downloads_loaded.emit(jobs)

    def _on_downloads_list_failed(self, error: ApiError) -> None:
        if self.downloads.live_ids():
            self._retry.start()  # the backend is away (restarting): ask again, then follow what still runs
            return
        self.downloads_panel.empty.setText(f"Could not list the downloads: {error}")
        self.downloads_panel.empty.show()

    def _apply(self, job: dict) -> None:
        if not isinstance(job, dict) or not job.get("id"):
            return
        if self.downloads.update(job):
            self._show_downloads()
            self._follow_live()
            if job.get("state") == "done" and self.model and job.get("repo_id") == self.model.get("repo_id"):
                self._reload_model()  # its variants' "on disk" marks
            self.download_changed.emit(job)

    def _reload_model(self) -> None:
        self._model_seq += 1
        seq = self._model_seq
        self._calls.get(hub.model_path(self.model["repo_id"]), lambda a: self._on_model_answered(seq, a),
                        lambda _e: None, timeout_ms=HUB_TIMEOUT_MS)

    def _show_downloads(self) -> None:
        self.downloads_panel.show_jobs(self.downloads.ordered())
        self._update_actions()

    def _follow_live(self) -> None:
        for job_id in self.downloads.live_ids():
            if job_id not in self._streams:
                stream = self._client.stream(f"/api/downloads/{job_id}/events", parent=self)
                stream.event.connect(self._on_stream_event)
                stream.ended.connect(lambda job_id=job_id: self._on_stream_ended(job_id))
                self._streams[job_id] = stream
                stream.start()

    def _on_stream_event(self, name: str, data) -> None:
        if name in ("progress", *ENDS):
            self._apply(data)

    def _on_stream_ended(self, job_id: str) -> None:
        stream = self._streams.pop(job_id, None)
        if stream is not None:
            stream.deleteLater()
        if job_id in self.downloads.live_ids():
            self._retry.start()  # the stream broke off before the end: read the list again, then follow

    def _on_retry_timeout(self) -> None:
        self._list_downloads()

    # ------------------------------------------------------------------ helpers

    def _show_error(self, label: QLabel, text: str) -> None:
        label.setText(text)
        label.setObjectName("errorText")
        self._repolish(label)
        label.show()

    @staticmethod
    def _repolish(widget: QWidget) -> None:
        widget.style().unpolish(widget)
        widget.style().polish(widget)

    def shutdown(self) -> None:
        """Stop the event streams and calls (downloads go on in the backend)."""
        self._retry.stop()
        self._search_timer.stop()
        self._calls.abort_all()
        for stream in list(self._streams.values()):
            stream.stop()
            stream.deleteLater()
        self._streams.clear()


def _table(columns: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().hide()
    table.setShowGrid(False)
    table.setAlternatingRowColors(True)
    table.horizontalHeader().setStretchLastSection(True)
    table.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    table.setWordWrap(False)
    return table
