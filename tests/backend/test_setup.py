"""The first-run check and the stored Hugging Face token: through HTTP, against the real engine."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import httpx
import pytest

from backend.app import create_app
from backend.secrets_store import delete_secret, read_secret, secret_path, stored_values, write_secret
from backend.settings import REPO_ROOT, Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.live_server import serve
from tests.support.waiting import wait_until

TOKEN = "setup-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HF_VALUE = f"hf_{RUN_ID}SecretValueNeverShown"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- the store


def test_write_read_delete_secret_owner_only(tmp_path):
    home = tmp_path / "home"
    assert read_secret(home, "HF_TOKEN") is None
    path = write_secret(home, "HF_TOKEN", "  hf_abc  ")
    assert path == home / "secrets" / "HF_TOKEN"
    assert read_secret(home, "HF_TOKEN") == "hf_abc"
    if os.name != "nt":
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
    write_secret(home, "HF_TOKEN", "hf_new")  # replaced atomically, no temporary file left
    assert read_secret(home, "HF_TOKEN") == "hf_new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["HF_TOKEN"]
    assert delete_secret(home, "HF_TOKEN") is True
    assert delete_secret(home, "HF_TOKEN") is False
    assert read_secret(home, "HF_TOKEN") is None


def test_secret_names_cannot_escape_the_folder(tmp_path):
    for bad in ("../token", "a/b", "", "X Y"):
        with pytest.raises(ValueError):
            secret_path(tmp_path, bad)
    with pytest.raises(ValueError):
        write_secret(tmp_path, "HF_TOKEN", "   ")


def test_stored_values_fill_gaps_only(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("OTHER_TOKEN", raising=False)
    write_secret(tmp_path, "HF_TOKEN", "stored")
    # the store fills a name the recipe lists when nothing else gives it
    assert stored_values(tmp_path, ["HF_TOKEN"], {}) == {"HF_TOKEN": "stored"}
    # the launch request wins
    assert stored_values(tmp_path, ["HF_TOKEN"], {"HF_TOKEN": "given"}) == {"HF_TOKEN": "given"}
    # the backend's environment wins (the engine reads it at create time)
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert stored_values(tmp_path, ["HF_TOKEN"], {}) == {}
    # names nothing stores stay absent
    assert stored_values(tmp_path, ["OTHER_TOKEN"], {}) == {}


# --------------------------------------------------------------------------- through HTTP


@pytest.fixture(scope="module")
def secret_catalog(tmp_path_factory) -> Path:
    """The demo recipe, plus ``secrets = ["HF_TOKEN"]``: a CPU recipe that names a secret."""
    folder = tmp_path_factory.mktemp("secret-catalog")
    text = (REPO_ROOT / "containers" / "demo.toml").read_text(encoding="utf-8")
    assert "[env.values]" in text
    (folder / "demo.toml").write_text(text.replace("[env.values]", '[env]\nsecrets = ["HF_TOKEN"]\n\n[env.values]'),
                                      encoding="utf-8")
    shutil.copytree(REPO_ROOT / "containers" / "demo", folder / "demo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for other in ("vllm.toml", "ollama.toml"):  # recipes with a huggingface and an ollama cache
        shutil.copy(REPO_ROOT / "containers" / other, folder / other)
    return folder


@pytest.fixture(scope="module")
def setup_api(engine, demo_image, demo_base_image, secret_catalog, tmp_path_factory):
    home = tmp_path_factory.mktemp("setup-home")
    # huggingface: the default named volume; ollama: a host folder not made yet
    settings = Settings(home=home, token=TOKEN, demo_base_image=demo_base_image, catalog_dir=secret_catalog,
                        cache_dirs={"ollama": home / "ollama-cache"}, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url, home


def _checks(url: str) -> dict[str, dict]:
    r = httpx.get(f"{url}/api/setup/checks", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return {c["id"]: c for c in r.json()}


@pytest.mark.docker
def test_checks_report_engine_gpu_token_cache_and_files(setup_api, engine):
    url, home = setup_api
    checks = _checks(url)
    assert {"engine", "gpu", "hf_token", "private_files"} <= set(checks)
    for c in checks.values():
        assert set(c) == {"id", "title", "ok", "level", "detail", "fix"}
        assert c["level"] in ("pass", "warn", "fail")
        assert c["ok"] == (c["level"] == "pass")
        assert c["detail"]
        if not c["ok"]:
            assert c["fix"], c
    assert checks["engine"]["level"] == "pass"
    if not engine.status().gpu_runtime:
        assert checks["gpu"]["level"] == "warn"
        assert "nvidia-ctk" in checks["gpu"]["fix"]
    folder = checks["cache:ollama"]
    assert folder["detail"].startswith(f"Folder {home / 'ollama-cache'}") and " free of " in folder["detail"]
    volume = checks["cache:huggingface"]
    assert "Docker volume modeldeck-cache-huggingface" in volume["detail"]
    assert " free of " in volume["detail"] or "free space unknown" in volume["detail"]


@pytest.mark.docker
def test_hf_token_put_delete_never_returns_the_value(setup_api, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    url, home = setup_api
    assert _checks(url)["hf_token"]["level"] == "warn"

    r = httpx.put(f"{url}/api/setup/hf-token", headers=AUTH, json={"token": HF_VALUE}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["level"] == "pass" and HF_VALUE not in r.text
    path = home / "secrets" / "HF_TOKEN"
    assert path.read_text().strip() == HF_VALUE
    if os.name != "nt":
        assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    checks = _checks(url)
    assert checks["hf_token"]["level"] == "pass"
    assert checks["private_files"]["level"] == "pass"
    assert HF_VALUE not in json.dumps(checks)

    r = httpx.put(f"{url}/api/setup/hf-token", headers=AUTH, json={"token": "two words"}, timeout=10)
    assert r.status_code == 422 and "two words" not in r.text
    assert path.read_text().strip() == HF_VALUE  # a refused value changes nothing

    assert httpx.delete(f"{url}/api/setup/hf-token", headers=AUTH, timeout=10).status_code == 204
    assert not path.exists()
    assert _checks(url)["hf_token"]["level"] == "warn"
    assert httpx.delete(f"{url}/api/setup/hf-token", headers=AUTH, timeout=10).status_code == 204


@pytest.mark.docker
def test_private_files_check_fails_on_a_loose_secret(setup_api):
    url, home = setup_api
    path = write_secret(home, "HF_TOKEN", "hf_loose")
    try:
        os.chmod(path, 0o644)
        check = _checks(url)["private_files"]
        assert check["level"] == "fail"
        assert check["fix"] == f"chmod 600 {path}"
    finally:
        delete_secret(home, "HF_TOKEN")


@pytest.mark.docker
@pytest.mark.slow
def test_launch_gets_the_stored_token_and_shows_it_nowhere(setup_api, engine, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    url, home = setup_api
    assert httpx.put(f"{url}/api/setup/hf-token", headers=AUTH, json={"token": HF_VALUE},
                     timeout=10).status_code == 200
    served = f"t{RUN_ID}-secret"
    r = httpx.post(f"{url}/api/deployments", headers=AUTH, timeout=30,
                   json={"recipe": "demo", "model": "demo-tiny", "served_name": served})
    assert r.status_code == 202, r.text
    dep_id = r.json()["id"]
    seen = [r.text]
    try:
        with httpx.stream("GET", f"{url}/api/deployments/{dep_id}/events", headers=AUTH, timeout=120) as s:
            events = s.read().decode()
        seen.append(events)
        assert '"phase": "ready"' in events or '"phase":"ready"' in events, events[-500:]

        # The container has it ...
        container = engine.client.api.inspect_container(f"modeldeck-{dep_id}")
        assert f"HF_TOKEN={HF_VALUE}" in container["Config"]["Env"]
        assert HF_VALUE not in json.dumps(container["Config"]["Labels"])
        # ... and no ModelDeck answer does.
        for path in ("/api/deployments", f"/api/deployments/{dep_id}", f"/api/deployments/{dep_id}/compose",
                     f"/api/deployments/{dep_id}/logs?tail=1000", "/api/setup/checks", "/openapi.json"):
            r = httpx.get(f"{url}{path}", headers=AUTH, timeout=30)
            assert r.status_code == 200, (path, r.text)
            seen.append(r.text)
        compose = seen[-4]
        assert "${HF_TOKEN}" in compose
        for text in seen:
            assert HF_VALUE not in text
    finally:
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)
        delete_secret(home, "HF_TOKEN")
        wait_until(lambda: httpx.get(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=10).status_code == 404,
                   30, interval=0.2, what=f"deployment {dep_id} removed")
