"""The Discover page on a real X display against a real backend whose Hub is the local stand-in (HF_ENDPOINT):
search, a model page with its quantizations and fit badges, Download with progress (bytes, rate, time left) to done,
Cancel, Launch preselected, downloads started before the window opened, a gated model's note, refusal and token."""

from __future__ import annotations

import re
import time
import httpx
import pytest
from PySide6.QtCore import Qt

from backend.app import create_app
from backend.settings import Settings
from desktop.widgets.fit_badges import FitBadges
from tests.conftest import RUN_ID, RUN_LABEL
from tests.desktop.conftest import SHOTS
from tests.support.hub_standin import (DEFAULT_TOKEN, GATED_REPO, GGUF_REPO, ONNX_REPO, SAFETENSORS_REPO,
                                      SHARDED_REPO, HubFile, HubRepo)
from tests.support.live_server import serve
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.docker]
TOKEN = "discover-token"
H = {"Authorization": f"Bearer {TOKEN}"}
PACED_REPO = "modeldeck-tests/Paced-GGUF"


@pytest.fixture
def hub_backend(engine, demo_base_image, hub_standin, tmp_path):
    """A real backend whose Hub is the stand-in and whose Hugging Face cache is a host folder of this test."""
    caches = {"huggingface": tmp_path / "hf-cache", "ollama": tmp_path / "ollama-cache"}
    for folder in caches.values():
        folder.mkdir()
    settings = Settings(home=tmp_path / "home", token=TOKEN, hf_endpoint=hub_standin.url, cache_dirs=caches,
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url


def _click_row(qtbot, table, row: int) -> None:
    rect = table.visualRect(table.model().index(row, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def _search(qtbot, page, text: str, fmt: str) -> list[dict]:
    page.format_combo.setCurrentIndex(page.format_combo.findData(fmt))
    page.search_edit.setText(text)
    with qtbot.waitSignal(page.results_loaded, timeout=30000) as loaded:
        qtbot.mouseClick(page.search_button, Qt.MouseButton.LeftButton)
    return loaded.args[0]


def _open(qtbot, page, repo_id: str) -> dict:
    row = [r["repo_id"] for r in page.results].index(repo_id)
    with qtbot.waitSignal(page.model_loaded, timeout=30000) as loaded:
        _click_row(qtbot, page.results_table, row)
    assert page.stack.currentIndex() == 1 and page.model_title.text() == repo_id
    return loaded.args[0]


def test_search_model_page_download_to_done_and_launch_preselected(make_main_window, qtbot, hub_backend,
                                                                    tmp_path):
    # a download started before the window opened (by a script, or a desktop since closed) is listed when it opens
    early = httpx.post(f"{hub_backend}/api/downloads", headers=H, timeout=30,
                       json={"repo_id": GGUF_REPO, "revision": "main", "variant": "Q8_0"})
    assert early.status_code in (200, 202), early.text
    early_id = early.json()["id"]
    wait_until(lambda: httpx.get(f"{hub_backend}/api/downloads/{early_id}", headers=H).json()["state"] == "done",
               60, what="the early download to finish")

    window = make_main_window(url=hub_backend, token=TOKEN)
    page = window.discover
    window.show_page(window.pages.index(page))
    qtbot.waitUntil(lambda: early_id in page.downloads_panel.rows, timeout=15000)
    assert "Done" in page.downloads_panel.rows[early_id].detail.text()

    # search: GGUF repositories only, the Hub's figures in the table
    results = _search(qtbot, page, "Qwen2.5-0.5B", "gguf")
    repos = [r["repo_id"] for r in results]
    assert GGUF_REPO in repos and SAFETENSORS_REPO not in repos
    row = repos.index(GGUF_REPO)
    assert page.results_table.rowCount() == len(results)
    assert page.results_table.item(row, 0).text() == GGUF_REPO
    assert page.results_table.item(row, 1).text() == "25.3k"  # the stand-in records 25,310 downloads
    assert page.results_table.item(row, 3).text() == "apache-2.0"
    page.grab().save(f"{SHOTS}/discover-results.png")

    # the model page: its quantizations, each with a badge per device whose tooltip is the backend's message
    model = _open(qtbot, page, GGUF_REPO)
    ids = [v["id"] for v in page.variants]
    assert {"Q4_K_M", "Q8_0"} <= set(ids)
    assert page.variants_table.rowCount() == len(ids)
    for r, variant in enumerate(page.variants):
        badges = page.variants_table.cellWidget(r, 2)
        assert isinstance(badges, FitBadges)
        assert [label.toolTip() for label in badges.labels] == [b.tooltip for b in badges.badges]
        assert len(badges.labels) == len(variant["fit"]) >= 1
        assert any(f["message"] in label.toolTip() for f in variant["fit"] for label in badges.labels)
        assert any(label.text().split()[1] == "CPU" for label in badges.labels) == \
            any(f["device"] == "cpu" for f in variant["fit"])
        assert "llama.cpp" in page.variants_table.item(r, 3).text()
    q8 = ids.index("Q8_0")
    assert page.variants_table.item(q8, 4).text() == "✓"  # downloaded before the window opened
    assert model["servable"] and not page.model_note.isVisible()  # an open repository: no note

    # Launch: the dialog opens with the variant's runtime and model filled in
    page.select_variant("Q4_K_M")
    variant = page.selected_variant()
    assert variant["id"] == "Q4_K_M" and page.launch_button.isEnabled()
    qtbot.waitUntil(lambda: bool(window.models.recipes), timeout=10000)  # the catalog the dialog is made from
    qtbot.mouseClick(page.launch_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(window.models._dialogs), timeout=10000)
    dialog = window.models._dialogs[-1]
    assert dialog.recipe["name"] == variant["launch"]["recipe"] == "llama-cpp"
    assert dialog.model.text() == variant["launch"]["model"] == f"{GGUF_REPO}:Q4_K_M"
    dialog.close()
    # the other runtime that serves it, from the menu beside Launch
    others = [a.text() for a in page.launch_menu.actions()]
    assert not page.launch_other.isHidden() and others == [f"Ollama · hf.co/{GGUF_REPO}:Q4_K_M"]
    page.launch_menu.actions()[0].trigger()
    qtbot.waitUntil(lambda: window.models._dialogs and window.models._dialogs[-1] is not dialog, timeout=10000)
    ollama = window.models._dialogs[-1]
    assert (ollama.recipe["name"], ollama.model.text()) == ("ollama", f"hf.co/{GGUF_REPO}:Q4_K_M")
    ollama.close()

    # Download: the job shows in the panel and ends done; the variant is then marked on disk
    states: list[str] = []
    page.download_changed.connect(lambda job: states.append(job["state"]))
    with qtbot.waitSignal(page.download_changed, timeout=60000,
                          check_params_cb=lambda job: job["state"] == "done" and job.get("variant") == "Q4_K_M"):
        qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    assert states[0] in ("queued", "running", "done") and states[-1] == "done"
    job = next(j for j in page.downloads.jobs.values() if j.get("variant") == "Q4_K_M")
    shown = page.downloads_panel.rows[job["id"]]
    assert shown.bar.value() == shown.bar.maximum() and shown.detail.text().startswith("Done")
    assert not shown.cancel_button.isVisible()
    assert job["bytes_done"] == job["bytes_total"] > 0
    # in the Hugging Face cache layout the runtimes read (llama.cpp's -hf finds it there)
    repo_dir = tmp_path / "hf-cache" / "hub" / ("models--" + GGUF_REPO.replace("/", "--"))
    files = [f for f in (repo_dir / "snapshots").rglob("*Q4_K_M.gguf")]
    assert files and files[0].stat().st_size == job["bytes_total"]
    assert (repo_dir / "refs" / "main").is_file()
    qtbot.waitUntil(lambda: page.variants_table.item(page.variants.index(page.selected_variant()), 4).text() == "✓",
                    timeout=30000)
    assert page.download_button.text() == "Download again"
    window.grab().save(f"{SHOTS}/discover-model.png")
    # F5 reads the model page again (its fit is against the memory free now), keeping the selected variant
    with qtbot.waitSignal(page.model_loaded, timeout=30000):
        window.refresh()
    assert page.selected_variant()["id"] == "Q4_K_M"


def test_a_gated_model_says_so_before_download_and_downloads_with_the_saved_token(make_main_window, qtbot,
                                                                                  hub_backend, hub_standin):
    window = make_main_window(url=hub_backend, token=TOKEN)
    page = window.discover
    window.show_page(window.pages.index(page))
    results = _search(qtbot, page, "Llama-3.2", "")
    repos = [r["repo_id"] for r in results]
    assert GATED_REPO in repos
    assert page.results_table.item(repos.index(GATED_REPO), 4).text() == "yes (manual review)"
    assert "save a token" in page.results_table.item(repos.index(GATED_REPO), 4).toolTip()

    def open_refused() -> str:
        with qtbot.waitSignal(page.model_failed, timeout=30000) as failed:
            _click_row(qtbot, page.results_table, [r["repo_id"] for r in page.results].index(GATED_REPO))
        assert failed.args[0].status == 403 and failed.args[0].code == "hub_gated"
        assert page.model_note.isVisible() and page.model_note.objectName() == "warnText"
        assert not page.download_button.isEnabled() and page.variants_table.rowCount() == 0
        return page.model_note.text()

    # no token saved: the page says it is gated, where to accept the licence and where the token goes; nothing fetched
    note = open_refused()
    assert "gated" in note and "no Hugging Face token is saved" in note
    assert GATED_REPO in note and "token with read access" in note
    assert page.token_row.isVisible() and "field above" in page.action_note.text()
    assert hub_standin.count("GET", "model.safetensors") == 0
    window.grab().save(f"{SHOTS}/discover-gated.png")

    # a token without access, typed on the page: saved, the page read again, and said as such
    page.token_edit.setText("hf_no_access")
    with qtbot.waitSignal(page.model_failed, timeout=30000) as failed:
        qtbot.mouseClick(page.token_button, Qt.MouseButton.LeftButton)
    assert failed.args[0].code == "hub_gated" and "has no access" in page.model_note.text()
    assert page.token_edit.text() == ""  # never kept in the field

    # the right token: the page opens, still saying it is gated, and the download sends the token
    page.token_edit.setText(DEFAULT_TOKEN)
    with qtbot.waitSignal(page.model_loaded, timeout=30000) as loaded:
        qtbot.keyClick(page.token_edit, Qt.Key.Key_Return)
    model = loaded.args[0]
    assert not page.token_row.isVisible()
    assert model["gated"] == "manual" and page.model_note.isVisible() and "gated" in page.model_note.text()
    assert page.variants and page.download_button.isEnabled()
    with qtbot.waitSignal(page.download_changed, timeout=60000, check_params_cb=lambda job: job["state"] == "done"):
        qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    fetched = [r for r in hub_standin.requests if r.path.endswith("model.safetensors") and r.method == "GET"]
    assert fetched and all(r.authorization == f"Bearer {DEFAULT_TOKEN}" for r in fetched)


class PacedFile(HubFile):
    """A file the stand-in sends at about 6 MiB/s (64 KiB every 10 ms), as a slow link would: long enough to watch
    its progress and cancel it. The pacing is the simulated network's, not the test's synchronisation."""

    def read(self, start: int, end: int):
        for piece in super().read(start, end):
            time.sleep(0.01)
            yield piece


def test_download_progress_shows_bytes_rate_and_time_left_and_cancel_removes_it(make_main_window, qtbot,
                                                                                hub_backend, hub_standin, tmp_path):
    size = 24 << 20
    hub_standin.add(HubRepo(PACED_REPO, [
        HubFile("README.md", b"# paced\n"),
        PacedFile("Paced-Q4_K_M.gguf", b"GGUF" + bytes(size - 4)),
        PacedFile("Paced-Q8_0.gguf", b"GGUF\x01" + bytes(size - 5)),
    ], downloads=7, likes=1, tags=["gguf", "text-generation"]))
    window = make_main_window(url=hub_backend, token=TOKEN)
    page = window.discover
    window.show_page(window.pages.index(page))
    _search(qtbot, page, "Paced", "gguf")
    _open(qtbot, page, PACED_REPO)
    seen: list[dict] = []
    page.download_changed.connect(seen.append)

    # mid-way: the row says how much of how much, how fast and how long is left, and the button follows it
    page.select_variant("Q4_K_M")
    with qtbot.waitSignal(page.download_changed, timeout=30000,
                          check_params_cb=lambda j: j["state"] == "running" and 0 < j["bytes_done"] < size
                          and j.get("rate_bps")):
        qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    job_id = seen[-1]["id"]
    row = page.downloads_panel.rows[job_id]
    assert re.fullmatch(r"[\d.]+ (KiB|MiB) of 24\.0 MiB · [\d.]+ (KiB|MiB)/s · .+ left", row.detail.text()), \
        row.detail.text()
    assert 0 < row.bar.value() < row.bar.maximum() and row.cancel_button.isVisible()
    assert page.download_button.text().startswith("Downloading…") and not page.download_button.isEnabled()
    window.grab().save(f"{SHOTS}/discover-downloading.png")

    # Cancel: the job ends cancelled, its row says so, and no part of the file is left in the cache
    with qtbot.waitSignal(page.download_changed, timeout=30000, check_params_cb=lambda j: j["state"] == "cancelled"):
        qtbot.mouseClick(row.cancel_button, Qt.MouseButton.LeftButton)
    assert row.detail.text().startswith("Cancelled") and not row.cancel_button.isVisible()
    assert httpx.get(f"{hub_backend}/api/downloads/{job_id}", headers=H).json()["state"] == "cancelled"
    cache = tmp_path / "hf-cache"
    assert not [p for p in cache.rglob("*Paced-Q4_K_M*")], list(cache.rglob("*"))
    assert page.download_button.isEnabled() and page.download_button.text() == "Download"

    # the other quantization to the end: progress events on the way, then done
    seen.clear()
    page.select_variant("Q8_0")
    with qtbot.waitSignal(page.download_changed, timeout=60000, check_params_cb=lambda j: j["state"] == "done"):
        qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    assert any(j["state"] == "running" and 0 < j["bytes_done"] < size for j in seen), seen
    done = seen[-1]
    assert done["bytes_done"] == done["bytes_total"] == size
    assert page.downloads_panel.rows[done["id"]].detail.text().startswith("Done")


def test_a_download_running_before_the_window_opened_is_followed_to_the_end(make_main_window, qtbot, hub_backend,
                                                                            hub_standin):
    size = 24 << 20
    hub_standin.add(HubRepo(PACED_REPO, [PacedFile("Paced-Q4_K_M.gguf", b"GGUF\x02" + bytes(size - 5))],
                            tags=["gguf", "text-generation"]))
    started = httpx.post(f"{hub_backend}/api/downloads", headers=H, timeout=30,
                         json={"repo_id": PACED_REPO, "revision": "main", "variant": "Q4_K_M"})
    assert started.status_code in (200, 202), started.text
    job_id = started.json()["id"]
    window = make_main_window(url=hub_backend, token=TOKEN)
    page = window.discover
    window.show_page(window.pages.index(page))
    qtbot.waitUntil(lambda: job_id in page.downloads_panel.rows, timeout=15000)
    row = page.downloads_panel.rows[job_id]
    assert httpx.get(f"{hub_backend}/api/downloads/{job_id}", headers=H).json()["state"] in ("queued", "running"), \
        "the download ended before the window listed it: the file is sent too fast for this test"
    assert not row.cancel_button.isHidden() and job_id in page._streams  # live: its events are followed
    qtbot.waitUntil(row.cancel_button.isVisible, timeout=5000)  # a row added to a shown panel is shown next pass
    qtbot.waitUntil(lambda: row.detail.text().startswith("Done"), timeout=60000)
    assert row.bar.value() == row.bar.maximum() and row.cancel_button.isHidden()
    qtbot.waitUntil(lambda: job_id not in page._streams, timeout=10000)  # the stream ends with the job


def test_a_repository_no_runtime_serves_shows_why(make_main_window, qtbot, hub_backend):
    window = make_main_window(url=hub_backend, token=TOKEN)
    page = window.discover
    window.show_page(window.pages.index(page))
    results = _search(qtbot, page, "MiniLM", "")
    assert ONNX_REPO in [r["repo_id"] for r in results]
    with qtbot.waitSignal(page.model_failed, timeout=30000) as failed:
        _click_row(qtbot, page.results_table, [r["repo_id"] for r in results].index(ONNX_REPO))
    assert failed.args[0].status == 422 and failed.args[0].code == "hub_not_servable"
    assert page.model_note.isVisible() and page.model_note.objectName() == "errorText"
    assert "onnx" in page.model_note.text().lower() and "GGUF" in page.model_note.text()
    assert not page.download_button.isEnabled() and not page.launch_button.isEnabled()
    # back to the results, which are still there
    qtbot.mouseClick(page.back_button, Qt.MouseButton.LeftButton)
    assert page.stack.currentIndex() == 0 and page.results_table.rowCount() == len(results)


def test_a_sharded_safetensors_model_downloads_every_shard_and_launches_on_vllm(make_main_window, qtbot,
                                                                                hub_backend):
    window = make_main_window(url=hub_backend, token=TOKEN)
    page = window.discover
    window.show_page(window.pages.index(page))
    results = _search(qtbot, page, "SmolLM2", "safetensors")
    assert [r["repo_id"] for r in results] == [SHARDED_REPO]
    _open(qtbot, page, SHARDED_REPO)
    assert len(page.variants) == 1
    variant = page.variants[0]
    assert variant["format"] == "safetensors" and page.variants_table.item(0, 0).text().endswith("· 2 shards")
    assert page.variants_table.item(0, 3).text() == "vLLM, SGLang, TGI"
    page.select_variant(variant["id"])
    qtbot.waitUntil(lambda: bool(window.models.recipes), timeout=10000)
    qtbot.mouseClick(page.launch_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(window.models._dialogs), timeout=10000)
    dialog = window.models._dialogs[-1]
    assert (dialog.recipe["name"], dialog.model.text()) == ("vllm", SHARDED_REPO)
    dialog.close()
    with qtbot.waitSignal(page.download_changed, timeout=60000, check_params_cb=lambda j: j["state"] == "done"):
        qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    job = next(j for j in page.downloads.jobs.values() if j["repo_id"] == SHARDED_REPO)
    tip = page.downloads_panel.rows[job["id"]].bar.toolTip()
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        assert f"✓ {shard}: " in tip, tip  # each file with its own progress, both whole
