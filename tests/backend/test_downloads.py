"""Downloads (backend/downloads.py) through a real backend process, the real Docker engine and the Hub stand-in.

The Hub cannot be reached from the test machines: the backend talks to tests/support/hub_standin.py
through HF_ENDPOINT, which speaks the Hub's protocol (HEAD/GET /resolve/ with ETags, X-Repo-Commit
and Range). A file whose transfer a test must catch halfway is served by ``GatedFile``: its bytes
up to ``gate_at`` at once, the rest only once the test opens the gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from backend.engine import Engine
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.backend_process import BackendProcess
from tests.support.hub_standin import DEFAULT_TOKEN, GATED_REPO, GGUF_REPO, HubFile, HubRepo
from tests.support.sse import sse_events
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

VOLUME = "modeldeck-cache-huggingface"
FINISHED = ("done", "failed", "cancelled")
MIB = 1 << 20


@dataclass
class GatedFile(HubFile):
    """A file served up to ``gate_at`` bytes at once, the rest when ``gate`` is set (a stalled transfer)."""

    gate_at: int = MIB
    gate: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)

    def read(self, start: int, end: int):
        if start < self.gate_at:
            first = min(self.gate_at, end)
            yield from super().read(start, first)
            self.reached.set()
            self.gate.wait(120)
            start = first
        if start < end:
            yield from super().read(start, end)


def unique_repo(hub, data: bytes, *, gated_at: int | None = None, name: str = "tiny-Q4_K_M.gguf") -> tuple[str, HubFile]:
    """A repository of one GGUF under a name of this test alone (the cache volume is shared by every run)."""
    repo_id = f"modeldeck-test/t{uuid.uuid4().hex[:10]}-GGUF"
    f = GatedFile(name, data, gate_at=gated_at) if gated_at is not None else HubFile(name, data)
    hub.add(HubRepo(repo_id, [HubFile("README.md", b"# test\n"), f], tags=["gguf"]))
    return repo_id, f


@pytest.fixture()
def tiny_gguf(gguf_models) -> bytes:
    return (gguf_models / "tiny" / "tiny-llama.gguf").read_bytes()


@pytest.fixture()
def backends(tmp_path, hub_standin, demo_base_image):
    """Start real backends (``make(cache=...)``) that reach the Hub stand-in; all stopped at teardown."""
    started: list[BackendProcess] = []

    def make(cache: Path | None = None, *, home: Path | None = None, model_dirs: list[Path] | None = None,
             env: dict[str, str] | None = None) -> BackendProcess:
        variables = {"HF_ENDPOINT": hub_standin.url, "MODELDECK_HF_ENDPOINT": hub_standin.url, "HF_TOKEN": "",
                     **(env or {})}
        if cache is not None:
            variables["MODELDECK_CACHE_DIR_HUGGINGFACE"] = str(cache)
        if model_dirs:
            variables["MODELDECK_MODEL_DIRS"] = os.pathsep.join(str(d) for d in model_dirs)
        backend = BackendProcess(home or tmp_path / "home", demo_base_image=demo_base_image, env=variables)
        started.append(backend)
        backend.start()
        return backend

    yield make
    for backend in started:
        backend.stop()


def start(backend: BackendProcess, **body) -> httpx.Response:
    return backend.post("/api/downloads", json=body)


def follow(backend: BackendProcess, job_id: str, timeout: float = 120,
           events: list | None = None) -> list[tuple[str, dict]]:
    """The job's events until its last one (done, failed or cancelled), appended to ``events`` as they come."""
    events = [] if events is None else events
    with httpx.stream("GET", f"{backend.url}/api/downloads/{job_id}/events", headers=backend.auth,
                      timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        for name, data in sse_events(r):
            events.append((name, json.loads(data)))
            if name in FINISHED:
                break
    return events


def wait_state(backend: BackendProcess, job_id: str, states=FINISHED, timeout: float = 120) -> dict:
    def state():
        job = backend.get(f"/api/downloads/{job_id}").json()
        return job if job["state"] in states else None

    return wait_until(state, timeout, interval=0.1, what=f"download {job_id} to reach {states}")


def hub_repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / "hub" / ("models--" + repo_id.replace("/", "--"))


def assert_hub_layout(cache: Path, repo_id: str, commit: str, path: str, data: bytes) -> None:
    """The file as huggingface_hub and llama.cpp (common/hf-cache.cpp) look for it."""
    repo = hub_repo_folder(cache, repo_id)
    assert (repo / "refs" / "main").read_text() == commit
    pointer = repo / "snapshots" / commit / path
    assert pointer.is_symlink()
    blob = Path(os.path.normpath(pointer.parent / os.readlink(pointer)))
    assert blob.parent == repo / "blobs" and blob.name == hashlib.sha256(data).hexdigest()
    assert pointer.read_bytes() == data
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache(repo_id, path, cache_dir=cache / "hub") == str(pointer)


def run_in_volume(script: str) -> str:
    """A shell script in a throwaway container with the cache volume at /cache; its output."""
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", "--label", f"{RUN_LABEL}={RUN_ID}",
                          "-v", f"{VOLUME}:/cache", "modeldeck/demo-base:bookworm", "sh", "-c", script],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


# -- into a host folder ------------------------------------------------------------------


def test_variant_download_into_host_cache_reports_progress_and_lands_in_the_hub_layout(
        backends, hub_standin, tiny_gguf, tmp_path):
    repo_id, gated = unique_repo(hub_standin, tiny_gguf, gated_at=MIB)
    cache = tmp_path / "hf-cache"
    backend = backends(cache)
    r = start(backend, repo_id=repo_id, variant="Q4_K_M")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["target"] == str(cache)
    assert job["files"] == [{"path": "tiny-Q4_K_M.gguf", "size": len(tiny_gguf), "bytes_done": 0}]
    assert job["bytes_total"] == len(tiny_gguf)

    # The same request while it runs is the same job (200), not a second transfer.
    again = start(backend, repo_id=repo_id, variant="Q4_K_M")
    assert again.status_code == 200 and again.json()["id"] == job["id"]

    events: list[tuple[str, dict]] = []
    began = time.monotonic()
    reader = threading.Thread(target=follow, args=(backend, job["id"]), kwargs={"events": events})
    reader.start()
    assert gated.reached.wait(60), "the backend never asked for the file"
    mid = wait_state(backend, job["id"], states=("running",))
    # The stall is reported: a progress event with the first MiB arrives while the rest is held back.
    wait_until(lambda: any(n == "progress" and e["bytes_done"] >= MIB for n, e in list(events)), 30,
               what="a progress event with the first MiB")
    gated.gate.set()
    reader.join(120)
    followed_s = time.monotonic() - began
    assert mid["state"] == "running"
    names = [n for n, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"progress"}, names
    done_bytes = [e["bytes_done"] for n, e in events if n == "progress"]
    assert done_bytes == sorted(done_bytes), "progress never goes backwards"
    assert any(MIB <= b < len(tiny_gguf) for b in done_bytes), f"no progress event mid-file: {done_bytes}"
    # Throttled: about 80 chunks arrived, at most 4 progress events a second (plus the first and each file's end).
    assert len(done_bytes) <= 4 * followed_s + 3, (len(done_bytes), followed_s)
    final = events[-1][1]
    assert final["bytes_done"] == final["bytes_total"] == len(tiny_gguf) and final["finished"]
    assert final["error"] is None and final["eta_s"] is None

    commit = hub_standin.repos[repo_id].sha
    assert_hub_layout(cache, repo_id, commit, "tiny-Q4_K_M.gguf", tiny_gguf)
    assert not (backend.home / "downloads" / job["id"]).exists(), "staging is emptied"
    listed = backend.get("/api/downloads").json()["downloads"]
    assert [d["id"] for d in listed] == [job["id"]] and listed[0]["state"] == "done"
    saved = json.loads((backend.home / "downloads" / "jobs.json").read_text())
    assert saved[0]["id"] == job["id"] and saved[0]["state"] == "done"

    # Downloading it again finds the blob in the cache: linked, not fetched again.
    gets = hub_standin.count("GET", "/resolve/")
    second = start(backend, repo_id=repo_id, variant="Q4_K_M").json()
    assert wait_state(backend, second["id"])["state"] == "done"
    assert hub_standin.count("GET", "/resolve/") == gets


def test_a_cut_connection_is_resumed_with_a_range_request(backends, hub_standin, tiny_gguf, tmp_path):
    cache = tmp_path / "hf-cache"
    backend = backends(cache)
    hub_standin.cut_after_bytes = 1_500_000
    job = start(backend, repo_id=GGUF_REPO, variant="Q8_0").json()
    assert wait_state(backend, job["id"])["state"] == "done"
    path = "Qwen2.5-0.5B-Instruct-Q8_0.gguf"
    ranged = [r.range for r in hub_standin.requests if r.method == "GET" and r.path.endswith(path) and r.range]
    assert ranged == ["bytes=1500000-"]
    assert_hub_layout(cache, GGUF_REPO, hub_standin.repos[GGUF_REPO].sha, path, tiny_gguf)


def test_a_killed_backend_resumes_the_download_from_the_bytes_it_had(backends, hub_standin, tiny_gguf, tmp_path):
    repo_id, gated = unique_repo(hub_standin, tiny_gguf, gated_at=2 * MIB)
    cache, home = tmp_path / "hf-cache", tmp_path / "home"
    first = backends(cache, home=home)
    job = start(first, repo_id=repo_id, variant="Q4_K_M").json()
    assert gated.reached.wait(60)
    staged = home / "downloads" / job["id"] / "tiny-Q4_K_M.gguf.part"
    wait_until(lambda: staged.exists() and staged.stat().st_size == 2 * MIB, 30, what="2 MiB staged")
    first.kill()
    gated.gate.set()  # the server finishes the old response into a dead socket

    second = backends(cache, home=home)
    assert wait_state(second, job["id"])["state"] == "done"
    gets = [r.range for r in hub_standin.requests if r.method == "GET" and r.path.endswith("tiny-Q4_K_M.gguf")]
    assert gets == [None, f"bytes={2 * MIB}-"], gets
    assert_hub_layout(cache, repo_id, hub_standin.repos[repo_id].sha, "tiny-Q4_K_M.gguf", tiny_gguf)


def test_cancel_stops_the_transfer_and_removes_partial_files(backends, hub_standin, tiny_gguf, tmp_path):
    repo_id, gated = unique_repo(hub_standin, tiny_gguf, gated_at=MIB)
    cache = tmp_path / "hf-cache"
    backend = backends(cache)
    job = start(backend, repo_id=repo_id, variant="Q4_K_M").json()
    events: list[tuple[str, dict]] = []
    reader = threading.Thread(target=follow, args=(backend, job["id"]), kwargs={"events": events})
    reader.start()
    assert gated.reached.wait(60)
    staged = backend.home / "downloads" / job["id"]
    wait_until(lambda: any(staged.glob("*.part")), 30, what="a partial file")
    try:
        r = backend.delete(f"/api/downloads/{job['id']}")  # the transfer is stalled: cancel must not wait for it
        assert r.status_code == 204, r.text
        assert not staged.exists(), "partial files are removed"
        assert backend.get(f"/api/downloads/{job['id']}").json()["state"] == "cancelled"
        reader.join(30)
        assert events[-1][0] == "cancelled"
        assert not hub_repo_folder(cache, repo_id).exists(), "nothing reached the cache"
        # Deleting a finished job forgets it.
        assert backend.delete(f"/api/downloads/{job['id']}").status_code == 204
        assert backend.get(f"/api/downloads/{job['id']}").status_code == 404
    finally:
        gated.gate.set()


@pytest.fixture()
def tiny_filesystem(tmp_path):
    """A real 1 MiB filesystem (tmpfs), to run a cache out of space."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, (f"mounting a 1 MiB tmpfs needs root (the CI container runs as root): "
                                 f"{run.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_not_enough_space_is_refused_before_anything_is_fetched(backends, hub_standin, tiny_filesystem):
    backend = backends(tiny_filesystem)
    before = hub_standin.count("GET", "/resolve/")
    r = start(backend, repo_id=GGUF_REPO, variant="Q4_K_M")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "not_enough_space"
    assert error["details"]["where"] == str(tiny_filesystem)
    assert error["details"]["free_bytes"] <= MIB < error["details"]["needed_bytes"]
    assert "MiB" in error["message"] and error["hint"]
    assert hub_standin.count("GET", "/resolve/") == before
    assert backend.get("/api/downloads").json()["downloads"] == []
    assert list(tiny_filesystem.iterdir()) == []


def test_a_gated_repo_needs_the_saved_token(backends, hub_standin, tmp_path):
    cache = tmp_path / "hf-cache"
    backend = backends(cache)
    r = start(backend, repo_id=GATED_REPO)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "hub_gated"
    assert "token" in (r.json()["error"]["message"] + (r.json()["error"]["hint"] or "")).lower()
    assert backend.get("/api/downloads").json()["downloads"] == []

    assert httpx.put(f"{backend.url}/api/setup/hf-token", headers=backend.auth, json={"token": DEFAULT_TOKEN},
                     timeout=30).status_code == 200
    seen = len(hub_standin.requests)
    r = start(backend, repo_id=GATED_REPO)
    assert r.status_code == 202, r.text
    job = wait_state(backend, r.json()["id"])
    assert job["state"] == "done", job
    assert {f["path"] for f in job["files"]} >= {"config.json", "model.safetensors"}
    gets = [r for r in hub_standin.requests[seen:] if r.method == "GET" and "/resolve/" in r.path]
    assert gets and all(r.authorization == f"Bearer {DEFAULT_TOKEN}" for r in gets)
    snapshot = hub_repo_folder(cache, GATED_REPO) / "snapshots" / hub_standin.repos[GATED_REPO].sha
    assert (snapshot / "model.safetensors").read_bytes() == hub_standin.repos[GATED_REPO].file("model.safetensors").data


def test_bad_requests_are_refused_and_write_nothing(backends, hub_standin, tmp_path):
    cache = tmp_path / "hf-cache"
    backend = backends(cache)
    cases = [
        ({"repo_id": "../etc", "variant": "Q4_K_M"}, 422),
        ({"repo_id": "org/a b"}, 422),
        ({"repo_id": GGUF_REPO, "files": ["../../../etc/passwd"]}, 422),
        ({"repo_id": GGUF_REPO, "files": ["/etc/passwd"]}, 422),
        ({"repo_id": GGUF_REPO, "revision": "../main"}, 422),
        ({"repo_id": GGUF_REPO, "files": ["no-such-file.gguf"]}, 422),
        ({"repo_id": GGUF_REPO, "variant": "Q9_Z"}, 404),
        ({"repo_id": GGUF_REPO, "variant": "Q4_K_M", "files": ["README.md"]}, 422),
        ({"repo_id": "nobody/no-such-repo"}, 404),
    ]
    for body, status in cases:
        r = start(backend, **body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["message"]
    assert backend.get("/api/downloads/dl-000000000000").status_code == 404
    assert backend.get("/api/downloads/..%2F..%2Fjobs").status_code in (404, 422)
    assert backend.delete("/api/downloads/not-an-id").status_code == 422
    assert backend.get("/api/downloads").json()["downloads"] == []
    assert not cache.exists() or not any(cache.rglob("*"))


# -- into the Docker volume ----------------------------------------------------------------


def test_download_into_the_cache_volume_in_the_layout_llama_cpp_reads(backends, hub_standin, tiny_gguf):
    repo_id, _ = unique_repo(hub_standin, tiny_gguf)
    folder = "models--" + repo_id.replace("/", "--")
    backend = backends()  # no host folder for the Hugging Face cache: the volume
    try:
        job = start(backend, repo_id=repo_id, variant="Q4_K_M").json()
        assert job["target"] == f"volume {VOLUME}"
        done = wait_state(backend, job["id"])
        assert done["state"] == "done", done
        commit = hub_standin.repos[repo_id].sha
        out = run_in_volume(f"cd /cache/hub/{folder} && cat refs/main && echo && "
                            f"readlink snapshots/{commit}/tiny-Q4_K_M.gguf && "
                            f"sha256sum snapshots/{commit}/tiny-Q4_K_M.gguf")
        ref, link, digest = out.splitlines()
        sha = hashlib.sha256(tiny_gguf).hexdigest()
        assert ref == commit
        assert link == f"../../blobs/{sha}"
        assert digest.split()[0] == sha
        # No helper container is left behind.
        assert Engine().remove_helpers({RUN_LABEL: RUN_ID}) == 0

        # The library lists it from the volume (through a helper container), and deletes it there.
        models = [m for m in backend.get("/api/library").json()["models"] if m["repo_id"] == repo_id]
        assert len(models) == 1, models
        m = models[0]
        assert m["kind"] == "gguf" and m["location"] == f"cache huggingface (volume {VOLUME})"
        assert m["revision"] == commit and m["variant"] == "Q4_K_M" and m["size_bytes"] == len(tiny_gguf)
        assert m["gguf"]["architecture"] == "llama"
        assert m["launch"] == {"recipe": "llama-cpp", "model": f"{repo_id}:Q4_K_M"}
        assert backend.delete(f"/api/library/{m['id']}").status_code == 204
        assert run_in_volume(f"ls /cache/hub/{folder} 2>/dev/null | wc -l").strip() == "0"
        assert all(x["repo_id"] != repo_id for x in backend.get("/api/library").json()["models"])
    finally:
        run_in_volume(f"rm -rf /cache/hub/{folder}")


def test_two_downloads_run_at_once_and_the_rest_wait_queued(backends, hub_standin, tiny_gguf, tmp_path):
    repos = [unique_repo(hub_standin, tiny_gguf, gated_at=MIB) for _ in range(4)]
    backend = backends(tmp_path / "hf-cache")
    jobs = [start(backend, repo_id=repo_id, variant="Q4_K_M").json() for repo_id, _ in repos]
    try:
        assert repos[0][1].reached.wait(60) and repos[1][1].reached.wait(60)
        states = [backend.get(f"/api/downloads/{j['id']}").json()["state"] for j in jobs]
        assert states == ["running", "running", "queued", "queued"], states
        # A queued download is cancelled without a byte fetched.
        assert backend.delete(f"/api/downloads/{jobs[3]['id']}").status_code == 204
        assert backend.get(f"/api/downloads/{jobs[3]['id']}").json()["state"] == "cancelled"
        repos[0][1].gate.set()
        assert repos[2][1].reached.wait(60), "the third starts when the first is done"
        assert wait_state(backend, jobs[0]["id"])["state"] == "done"
        for _, f in repos:
            f.gate.set()
        assert [wait_state(backend, j["id"])["state"] for j in jobs[:3]] == ["done"] * 3
        assert hub_standin.count("GET", f"{repos[3][0]}/resolve/") == 0
    finally:
        for _, f in repos:
            f.gate.set()


def test_a_stalled_transfer_shows_its_rate_falling(backends, hub_standin, tiny_gguf, tmp_path):
    repo_id, gated = unique_repo(hub_standin, tiny_gguf, gated_at=2 * MIB)
    backend = backends(tmp_path / "hf-cache")
    job = start(backend, repo_id=repo_id, variant="Q4_K_M").json()
    try:
        assert gated.reached.wait(60)
        fast = wait_until(lambda: (j := backend.get(f"/api/downloads/{job['id']}").json())["rate_bps"] and j, 30,
                          what="a rate")
        assert fast["rate_bps"] > 0 and fast["eta_s"] > 0
        stalled = wait_until(lambda: (j := backend.get(f"/api/downloads/{job['id']}").json())["rate_bps"] == 0 and j,
                             30, what="the rate of a stalled transfer to reach 0")
        assert stalled["eta_s"] is None and stalled["state"] == "running" and stalled["bytes_done"] == 2 * MIB
    finally:
        gated.gate.set()
    assert wait_state(backend, job["id"])["state"] == "done"


def test_a_backend_stopped_mid_transfer_exits_promptly_and_resumes_at_its_next_start(
        backends, hub_standin, tiny_gguf, tmp_path):
    repo_id, gated = unique_repo(hub_standin, tiny_gguf, gated_at=MIB)
    cache, home = tmp_path / "hf-cache", tmp_path / "home"
    first = backends(cache, home=home)
    job = start(first, repo_id=repo_id, variant="Q4_K_M").json()
    try:
        assert gated.reached.wait(60)
        staged = home / "downloads" / job["id"] / "tiny-Q4_K_M.gguf.part"
        wait_until(lambda: staged.exists() and staged.stat().st_size == MIB, 30, what="1 MiB staged")
        t0 = time.monotonic()
        first.stop()  # SIGTERM while the transfer is stalled: the worker is woken, not waited for
        assert time.monotonic() - t0 < 10 and first.proc.returncode == -15  # ended by its own SIGTERM handler,
        assert "Application shutdown complete" in first.log()                  # after the shutdown ran
        saved = {j["id"]: j for j in json.loads((home / "downloads" / "jobs.json").read_text())}
        assert saved[job["id"]]["state"] == "running", "left to resume, not failed"
    finally:
        gated.gate.set()
    second = backends(cache, home=home)
    assert wait_state(second, job["id"])["state"] == "done"
    gets = [r.range for r in hub_standin.requests if r.method == "GET" and r.path.endswith("tiny-Q4_K_M.gguf")]
    assert gets == [None, f"bytes={MIB}-"], gets


def test_named_files_including_an_empty_one_are_placed(backends, hub_standin, tiny_gguf, tmp_path):
    repo_id = f"modeldeck-test/t{uuid.uuid4().hex[:10]}"
    hub_standin.add(HubRepo(repo_id, [HubFile("model-Q4_K_M.gguf", tiny_gguf), HubFile("empty.txt", b""),
                                      HubFile("sub/config.json", b'{"a": 1}')], tags=["gguf"]))
    cache = tmp_path / "hf-cache"
    backend = backends(cache)
    r = start(backend, repo_id=repo_id, files=["empty.txt", "sub/config.json"])
    assert r.status_code == 202, r.text
    assert wait_state(backend, r.json()["id"])["state"] == "done"
    snapshot = hub_repo_folder(cache, repo_id) / "snapshots" / hub_standin.repos[repo_id].sha
    assert (snapshot / "empty.txt").is_symlink() and (snapshot / "empty.txt").read_bytes() == b""
    assert (snapshot / "sub" / "config.json").read_bytes() == b'{"a": 1}'
    assert os.readlink(snapshot / "sub" / "config.json").startswith("../../../blobs/")
    assert not (snapshot / "model-Q4_K_M.gguf").exists(), "only the files asked for"


@dataclass
class DroppedFile(GatedFile):
    """Served up to ``gate_at`` bytes, then, once ``gate`` is set, the connection drops (a network failure)."""

    def read(self, start: int, end: int):
        if start < self.gate_at:
            yield from HubFile.read(self, start, min(self.gate_at, end))
            self.reached.set()
            self.gate.wait(120)
            raise ConnectionResetError("the stand-in drops the transfer")
        yield from HubFile.read(self, start, end)


def test_a_failed_download_asked_again_resumes_from_its_partial_file(backends, hub_standin, tiny_gguf, tmp_path):
    repo_id = f"modeldeck-test/t{uuid.uuid4().hex[:10]}-GGUF"
    dropped = DroppedFile("tiny-Q4_K_M.gguf", tiny_gguf, gate_at=MIB)
    hub_standin.add(HubRepo(repo_id, [dropped], tags=["gguf"]))
    cache = tmp_path / "hf-cache"
    backend = backends(cache)
    first = start(backend, repo_id=repo_id, variant="Q4_K_M").json()
    assert dropped.reached.wait(60)
    hub_standin.fail_next = [503] * 5  # every retry after the drop is refused: the download fails
    dropped.gate.set()
    failed = wait_state(backend, first["id"])
    assert failed["state"] == "failed" and "5 times" in failed["error"] and failed["bytes_done"] == MIB
    assert (backend.home / "downloads" / first["id"] / "tiny-Q4_K_M.gguf.part").stat().st_size == MIB

    again = start(backend, repo_id=repo_id, variant="Q4_K_M").json()
    assert again["id"] != first["id"] and again["bytes_done"] == MIB, "it starts from the bytes it had"
    assert wait_state(backend, again["id"])["state"] == "done"
    gets = [r.range for r in hub_standin.requests if r.method == "GET" and r.path.endswith("tiny-Q4_K_M.gguf")
            and r.status != 503]
    assert gets[-1] == f"bytes={MIB}-", gets
    assert [d["id"] for d in backend.get("/api/downloads").json()["downloads"]] == [again["id"]]
    assert_hub_layout(cache, repo_id, hub_standin.repos[repo_id].sha, "tiny-Q4_K_M.gguf", tiny_gguf)
