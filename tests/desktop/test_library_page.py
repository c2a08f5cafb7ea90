"""The Library page on a real X display against a real backend: a model folder's GGUF files listed with their header
metadata, Launch preselected, Delete after confirmation, and a refusal (409) naming the deployment that uses a model."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.desktop.conftest import SHOTS
from tests.support.deployments import launch
from tests.support.live_server import serve

pytestmark = [pytest.mark.gui, pytest.mark.docker]
TOKEN = "library-page-token"
H = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def library_backend(engine, demo_base_image, gguf_models, tmp_path):
    """A real backend with a model folder of its own holding two copies of the tiny GGUF; (url, folder)."""
    models = tmp_path / "models"
    models.mkdir()
    tiny = gguf_models / "tiny" / "tiny-llama.gguf"
    shutil.copy(tiny, models / "kept-tiny.gguf")
    shutil.copy(tiny, models / "spare-tiny.gguf")
    caches = {"huggingface": tmp_path / "hf-cache", "ollama": tmp_path / "ollama-cache"}
    for folder in caches.values():
        folder.mkdir()
    settings = Settings(home=tmp_path / "home", token=TOKEN, model_dirs=[models], cache_dirs=caches,
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url, models


def _row(page, file_name: str) -> int:
    return page.row_of(lambda m: (m.get("path") or "").endswith(file_name))


def _cell(page, row: int, column: str) -> str:
    from desktop.library.local import COLUMNS

    return page.table.item(row, COLUMNS.index(column)).text()


def test_library_lists_launches_and_deletes_after_confirmation(make_main_window, qtbot, library_backend,
                                                               monkeypatch):
    url, models = library_backend
    window = make_main_window(url=url, token=TOKEN)
    page = window.library
    window.show_page(window.pages.index(page))
    qtbot.waitUntil(lambda: _row(page, "kept-tiny.gguf") >= 0 and _row(page, "spare-tiny.gguf") >= 0,
                    timeout=30000)
    row = _row(page, "spare-tiny.gguf")
    entry = page.models[row]
    assert _cell(page, row, "Kind") == "GGUF"
    assert _cell(page, row, "Size") != "?" and entry["size_bytes"] == (models / "spare-tiny.gguf").stat().st_size
    assert entry["gguf"]["architecture"] == "llama"  # read from the header
    assert _cell(page, row, "Context") == f"{entry['gguf']['context_length']:,}"
    assert str(models) in _cell(page, row, "Where") or str(models) in entry["path"]
    assert "2 models" in page.state.text() or "models" in page.state.text()
    page.grab().save(f"{SHOTS}/library-page.png")

    # Launch: the dialog opens with the runtime and the file filled in
    qtbot.waitUntil(lambda: bool(window.models.recipes), timeout=10000)
    page.table.selectRow(row)
    assert page.launch_button.isEnabled()
    qtbot.mouseClick(page.launch_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(window.models._dialogs), timeout=10000)
    dialog = window.models._dialogs[-1]
    assert (dialog.recipe["name"], dialog.model.text()) == (entry["launch"]["recipe"], entry["launch"]["model"])
    assert dialog.model.text().endswith("spare-tiny.gguf")
    dialog.close()

    # Delete: asked first (Cancel keeps the file), then the file is gone from disk and from the table
    asked: list[str] = []
    answer = [QMessageBox.StandardButton.Cancel]

    def question(_parent, title, text, *_args):
        asked.append(f"{title}\n{text}")
        return answer[0]

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    page.table.selectRow(_row(page, "spare-tiny.gguf"))
    qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert len(asked) == 1 and "spare-tiny.gguf" in asked[0] and (models / "spare-tiny.gguf").exists()
    answer[0] = QMessageBox.StandardButton.Yes
    with qtbot.waitSignal(page.deleted, timeout=30000):
        qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
    assert not (models / "spare-tiny.gguf").exists()
    qtbot.waitUntil(lambda: _row(page, "spare-tiny.gguf") < 0 and _row(page, "kept-tiny.gguf") >= 0, timeout=30000)
    assert not page.error.isVisible()


def test_delete_of_a_model_in_use_is_refused_with_the_deployment_named(make_main_window, qtbot, library_backend,
                                                                       llamacpp_image, monkeypatch):
    url, models = library_backend
    served = f"t{RUN_ID}-lib-in-use"
    dep_id, _ = launch(url, TOKEN, {"recipe": "llama-cpp", "model": str(models / "kept-tiny.gguf"),
                                    "served_name": served}, follow=False)
    try:
        window = make_main_window(url=url, token=TOKEN)
        page = window.library
        window.show_page(window.pages.index(page))

        asked_at = [time.monotonic()]

        def used() -> bool:
            row = _row(page, "kept-tiny.gguf")
            if row >= 0 and page.models[row].get("used_by"):
                return True
            if not page._loading and time.monotonic() - asked_at[0] > 1.0:  # list again, once a second
                asked_at[0] = time.monotonic()
                page.refresh()
            return False

        qtbot.waitUntil(used, timeout=30000)
        row = _row(page, "kept-tiny.gguf")
        assert _cell(page, row, "Used by") != "—"
        monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *_a: QMessageBox.StandardButton.Yes))
        page.table.selectRow(row)
        with qtbot.waitSignal(page.delete_refused, timeout=30000) as refused:
            qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
        text = refused.args[0]
        assert page.error.isVisible() and page.error.text() == text
        assert text.startswith("Cannot delete “") and "Deployments page" in text
        assert served in text or dep_id in text, text
        assert (models / "kept-tiny.gguf").exists()  # nothing was deleted
        window.grab().save(f"{SHOTS}/library-in-use.png")
        # once the deployment is removed, the next listing drops the refusal and the delete goes through
        assert httpx.delete(f"{url}/api/deployments/{dep_id}", headers=H, timeout=60).status_code in (200, 204)
        dep_id = None
        page.refresh()
        qtbot.waitUntil(lambda: not page.error.isVisible(), timeout=30000)
        page.select(page.models[_row(page, "kept-tiny.gguf")]["id"])
        with qtbot.waitSignal(page.deleted, timeout=30000):
            qtbot.mouseClick(page.delete_button, Qt.MouseButton.LeftButton)
        assert not (models / "kept-tiny.gguf").exists()
    finally:
        if dep_id:
            httpx.delete(f"{url}/api/deployments/{dep_id}", headers=H, timeout=60)


def test_models_page_links_into_discover_and_library(make_main_window, qtbot):
    window = make_main_window()
    window.show_page(window.pages.index(window.models))
    qtbot.mouseClick(window.models.discover_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.discover
    assert window.nav.currentItem().text() == "Discover"
    window.show_page(window.pages.index(window.models))
    qtbot.mouseClick(window.models.library_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.library
    assert window.nav.currentItem().text() == "Library"


def test_places_that_cannot_be_read_now_are_named_above_the_table(qtbot):
    """The listing's ``problems`` (a cache volume while Docker is away) as the page shows them, beside what it lists."""
    from desktop.client import BackendClient
    from desktop.pages.library import LibraryPage

    page = LibraryPage(BackendClient("http://127.0.0.1:9", "unused"))
    qtbot.addWidget(page)
    with qtbot.waitExposed(page):
        page.show()
    page._on_library_loaded({"models": [{"id": "a", "kind": "gguf", "name": "a.gguf", "size_bytes": 1}],
                             "scanned_ms": 3.0, "problems": ["cache ollama (volume modeldeck-cache-ollama): Docker is "
                                                             "not reachable"]})
    assert page.problems.isVisible() and "Docker is not reachable" in page.problems.text()
    assert page.table.rowCount() == 1 and page.state.text().startswith("1 model")
    page._on_library_loaded({"models": [], "scanned_ms": 1.0, "problems": []})
    assert page.problems.isHidden() and "No models on disk yet" in page.state.text()
    page.shutdown()
