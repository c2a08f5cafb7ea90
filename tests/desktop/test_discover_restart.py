"""The Discover page's downloads panel across a backend crash: the job resumes in the restarted backend and the
panel, whose event stream broke off, finds it again and follows it to the end."""

from __future__ import annotations

import pytest

from tests.desktop.test_discover_page import PACED_REPO, PacedFile
from tests.support.backend_process import TOKEN, BackendProcess
from tests.support.hub_standin import HubRepo

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def backend(demo_base_image, hub_standin, tmp_path):
    caches = {"huggingface": tmp_path / "hf-cache", "ollama": tmp_path / "ollama-cache"}
    for folder in caches.values():
        folder.mkdir()
    proc = BackendProcess(tmp_path / "home", demo_base_image=demo_base_image, log_level="warning",
                          env={"MODELDECK_HF_ENDPOINT": hub_standin.url,
                               **{f"MODELDECK_CACHE_DIR_{k.upper()}": str(v) for k, v in caches.items()}})
    proc.start()
    yield proc
    proc.stop()


def test_a_download_followed_when_the_backend_is_killed_is_followed_again_after_its_restart(make_main_window, qtbot,
                                                                                          backend, hub_standin):
    size = 48 << 20  # about 8 s at the stand-in's paced 6 MiB/s
    hub_standin.add(HubRepo(PACED_REPO, [PacedFile("Paced-Q4_K_M.gguf", b"GGUF\x03" + bytes(size - 5))],
                            tags=["gguf", "text-generation"]))
    started = backend.post("/api/downloads", json={"repo_id": PACED_REPO, "revision": "main", "variant": "Q4_K_M"})
    assert started.status_code in (200, 202), started.text
    job_id = started.json()["id"]
    window = make_main_window(url=backend.url, token=TOKEN)
    page = window.discover
    window.show_page(window.pages.index(page))
    qtbot.waitUntil(lambda: job_id in page.downloads_panel.rows and job_id in page._streams
                    and page.downloads.jobs[job_id].get("bytes_done", 0) > 0, timeout=20000)
    row = page.downloads_panel.rows[job_id]
    before = page.downloads.jobs[job_id]["bytes_done"]

    backend.kill()  # SIGKILL mid-download: the stream breaks off, the job stays in jobs.json as running
    qtbot.waitUntil(lambda: job_id not in page._streams, timeout=15000)
    assert row.detail.text().endswith("left") or row.detail.text().startswith("Waiting")  # still shown as live

    backend.start()  # the same port: the window's backend comes back and resumes the job
    qtbot.waitUntil(lambda: row.detail.text().startswith("Done"), timeout=90000)
    done = page.downloads.jobs[job_id]
    assert done["state"] == "done" and done["bytes_done"] == done["bytes_total"] == size > before
    assert row.bar.value() == row.bar.maximum() and row.cancel_button.isHidden()
    qtbot.waitUntil(lambda: job_id not in page._streams, timeout=10000)  # the stream ends with the job
