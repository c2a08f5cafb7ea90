"""The Models page: the runtime catalog as cards, each with a Launch button that opens the Launch dialog."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy,
                               QVBoxLayout, QWidget)

from desktop import theme
from desktop.client import ApiError, BackendClient
from desktop.pages.launch_dialog import LaunchDialog
from desktop.widgets.calls import Calls

GPU_NEED = {"required": ("GPU required", "gpu"), "optional": ("GPU optional", "true"), "none": ("CPU only", "cpu")}


def chip(text: str, kind: str = "true") -> QLabel:
    label = QLabel(text)
    label.setProperty("chip", kind)
    return label


class RecipeCard(QFrame):
    """One runtime of the catalog.

    Signals:
        launch_clicked(dict): the recipe to launch.
    """

    launch_clicked = Signal(dict)

    def __init__(self, recipe: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        self.recipe = recipe
        title = QLabel(recipe.get("title") or recipe.get("name") or "?")
        title.setObjectName("cardTitle")
        need_text, need_kind = GPU_NEED.get(recipe.get("gpu_need", "none"), GPU_NEED["none"])
        chips = QHBoxLayout()
        chips.setSpacing(6)
        chips.addWidget(chip(need_text, need_kind))
        chips.addWidget(chip("Built locally" if recipe.get("built_locally") else "Pulled image"))
        chips.addStretch(1)
        desc = QLabel(recipe.get("description") or "")
        desc.setWordWrap(True)
        desc.setProperty("muted", True)
        desc.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        desc.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        image = recipe.get("image") or ("built from containers/" + (recipe.get("name") or ""))
        detail = QLabel(f"Default model: {recipe.get('default_model') or '—'}\nImage: {image}")
        detail.setProperty("muted", True)
        detail.setWordWrap(True)
        detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.launch_button = QPushButton(theme.icon("launch", "accent_text"), "Launch…")
        self.launch_button.setProperty("primary", True)
        self.launch_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.launch_button.clicked.connect(self._on_launch_button_clicked)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(self.launch_button)
        box = QVBoxLayout(self)
        em = self.fontMetrics().horizontalAdvance("M")
        box.setContentsMargins(em, em, em, em)
        box.setSpacing(em // 2)
        box.addWidget(title)
        box.addLayout(chips)
        box.addWidget(desc, 1)
        box.addWidget(detail)
        box.addLayout(bottom)

    def _on_launch_button_clicked(self) -> None:
        self.launch_clicked.emit(self.recipe)


class ModelsPage(QWidget):
    """The catalog from ``GET /api/catalog`` as a grid of cards.

    Signals:
        show_deployments(): a launch dialog asked to see the Deployments page.
        launched(str): a launch was accepted (deployment id).
        created(str): a launch made a new deployment (deployment id; see LaunchDialog.created).
        discover_requested(): the person asked for the Discover page (find a model on the Hub).
        library_requested(): the person asked for the Library page (the models on disk).
    """

    show_deployments = Signal()
    launched = Signal(str)
    created = Signal(str)
    discover_requested = Signal()
    library_requested = Signal()

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self.client = client
        self.recipes: list[dict] = []
        self.cards: list[RecipeCard] = []
        self._dialogs: list[LaunchDialog] = []
        self._calls = Calls(client, self)
        title = QLabel("Models")
        title.setObjectName("pageTitle")
        subtitle = QLabel("Pick a runtime and launch a model. ModelDeck starts it in Docker and tells you "
                          "when it answers.")
        subtitle.setObjectName("pageSubtitle")
        subtitle.setWordWrap(True)
        # Models, not runtimes: find one on the Hub, or start from what is already on disk.
        self.discover_button = QPushButton(theme.icon("discover"), "Find a model on the Hub…")
        self.discover_button.setToolTip("Discover: search the Hugging Face Hub, see what fits, download")
        self.discover_button.clicked.connect(self.discover_requested)
        self.library_button = QPushButton(theme.icon("library"), "Models on disk…")
        self.library_button.setToolTip("Library: the models already downloaded, their size, launch or delete")
        self.library_button.clicked.connect(self.library_requested)
        links = QHBoxLayout()
        links.addWidget(self.discover_button)
        links.addWidget(self.library_button)
        links.addStretch(1)
        self.state = QLabel("Loading the catalog…")
        self.state.setProperty("muted", True)
        self.state.setWordWrap(True)
        self._host = QWidget()
        self._host.setObjectName("cardsHost")
        self._grid = QGridLayout(self._host)
        self._grid.setContentsMargins(0, 0, 0, 0)
        em = self.fontMetrics().horizontalAdvance("M")
        self._grid.setSpacing(em)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self._host)
        box = QVBoxLayout(self)
        box.setContentsMargins(em * 2, em * 2, em * 2, em)
        box.setSpacing(em // 2)
        box.addWidget(title)
        box.addWidget(subtitle)
        box.addLayout(links)
        box.addWidget(self.state)
        box.addWidget(scroll, 1)
        self._columns = 0
        self._catalog: dict | None = None
        theme.notifier().changed.connect(self._on_theme_changed)

    def _on_theme_changed(self, _scheme: str) -> None:
        self.discover_button.setIcon(theme.icon("discover"))
        self.library_button.setIcon(theme.icon("library"))
        if self._catalog is not None:
            self._on_catalog_loaded(self._catalog)  # the cards' icons are drawn in the theme's colours

    def refresh(self) -> None:
        """Reload the catalog from the backend."""
        self._calls.get("/api/catalog", self._on_catalog_loaded, self._on_catalog_failed)

    def _on_catalog_loaded(self, catalog: dict) -> None:
        self._catalog = catalog
        self.recipes = list(catalog.get("recipes") or [])
        errors = catalog.get("errors") or {}
        self.state.setText("" if not errors else "Some recipes were refused: " +
                           "; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.state.setVisible(bool(errors))
        for card in self.cards:
            card.deleteLater()
        self.cards = []
        for recipe in self.recipes:
            card = RecipeCard(recipe)
            card.launch_clicked.connect(self.open_launch_dialog)
            self.cards.append(card)
        self._columns = 0
        self._layout_cards()

    def _on_catalog_failed(self, error: ApiError) -> None:
        if not self.recipes:
            self.state.setText(f"Could not load the catalog: {error}")
            self.state.show()

    def _layout_cards(self) -> None:
        em = self.fontMetrics().horizontalAdvance("M")
        columns = max(1, min(3, self.width() // (em * 32)))
        if columns == self._columns:
            return
        self._columns = columns
        for card in self.cards:
            self._grid.removeWidget(card)
        for i, card in enumerate(self.cards):
            self._grid.addWidget(card, i // columns, i % columns)
            card.show()
        for c in range(3):
            self._grid.setColumnStretch(c, 1 if c < columns else 0)
        self._grid.setRowStretch(self._grid.rowCount(), 1)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._layout_cards()

    def open_launch_dialog(self, recipe: dict | None = None) -> LaunchDialog | None:
        """Open the Launch dialog for ``recipe`` (default: the first of the catalog)."""
        recipe = recipe or (self.recipes[0] if self.recipes else None)
        if recipe is None:
            return None
        dialog = LaunchDialog(self.client, recipe, self)
        dialog.show_deployments.connect(self.show_deployments)
        dialog.launched.connect(self.launched)
        dialog.created.connect(self.created)
        dialog.destroyed.connect(self._on_dialog_destroyed)
        self._dialogs.append(dialog)
        dialog.show()
        return dialog

    def open_launch_for(self, recipe_name: str, model: str) -> LaunchDialog | None:
        """The Launch dialog for the runtime ``recipe_name`` with ``model`` filled in (Discover's and Library's
        Launch); None when the catalog has no such runtime (the reason is shown in the page's state line)."""
        recipe = next((r for r in self.recipes if r.get("name") == recipe_name), None)
        if recipe is None:
            self.state.setText(f"No runtime named {recipe_name!r} in the catalog, so {model} cannot be launched "
                               "from here." if self.recipes else "The catalog is not loaded yet; try again.")
            self.state.show()
            return None
        dialog = self.open_launch_dialog(recipe)
        if dialog is not None:
            dialog.model.setText(model)
        return dialog

    def _on_dialog_destroyed(self, obj=None) -> None:
        self._dialogs = [d for d in self._dialogs if d is not obj and _alive(d)]

    def shutdown(self) -> None:
        """Abort calls and close open launch dialogs."""
        self._calls.abort_all()
        for dialog in list(self._dialogs):
            if _alive(dialog):
                dialog.shutdown()
                dialog.close()
        self._dialogs = []


def _alive(obj) -> bool:
    import shiboken6

    return shiboken6.isValid(obj)
