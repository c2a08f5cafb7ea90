"""Start the app against the demo model and save a screenshot of each page into assets/screenshots/.

Run through scripts/screenshots (which sets up the venv, Docker and the demo base image).
It starts a real backend process on a free port with a throwaway home folder, launches two
demo deployments, has the playground compare them, lets the monitor gather a few seconds of
data, and grabs every page of the real main window (on X; offscreen without a display), in the
light theme and one dark view. An argument saves them into another folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT / "assets" / "screenshots"
TOKEN = "screenshots-token"
MODELS = ("demo", "demo-creative")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(home: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_TOKEN": TOKEN, **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "backend.server", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the backend did not start")


def launch_demos(url: str) -> None:
    h = {"Authorization": f"Bearer {TOKEN}"}
    for name, temp in zip(MODELS, ("0.02", "0.03")):
        r = httpx.post(f"{url}/api/deployments", headers=h, timeout=60,
                       json={"recipe": "demo", "model": "demo-tiny", "served_name": name,
                             "env": {"DEMO_TOKEN_DELAY": temp}})
        r.raise_for_status()
    deadline = time.monotonic() + 180
    while True:
        ready = {m["id"] for m in httpx.get(f"{url}/v1/models", headers=h).json()["data"]}
        if set(MODELS) <= ready:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"demo deployments did not become ready: {ready}")
        time.sleep(0.5)


def grab_in_both_schemes(window, wait, name, settle_ms: int = 800, back_to_light: bool = True) -> list[Path]:
    """The window grabbed in the light scheme, then the dark one, ``settle_ms`` after each switch; ``name(scheme)``
    is each picture's file name."""
    from desktop import theme

    shots = []
    for scheme in ("light", "dark"):
        theme.apply(scheme)
        wait(settle_ms)
        path = OUT / name(scheme)
        window.grab().save(str(path))
        shots.append(path)
    if back_to_light:
        theme.apply("light")
    return shots


def dark_prefix(scheme: str) -> str:
    return "dark-" if scheme == "dark" else ""


def suites_shots(window, url: str, wait, wait_until) -> list[Path]:
    """The Suites page with a finished run of a small suite on both demo models, light and dark."""
    from desktop import theme

    h = {"Authorization": f"Bearer {TOKEN}"}
    animals = ("fox", "crow", "owl", "hare", "bear", "wolf", "lynx", "stork", "otter", "heron")
    cases = [{"id": f"fable-{a}", "prompt": "Tell a short fable about a {{animal}}.", "variables": {"animal": a},
              "checks": [{"kind": "max_length", "value": 90 if i % 3 == 0 else 2000},
                         {"kind": "not_contains", "value": "lorem"}]}
             for i, a in enumerate(animals, 1)]
    suite = httpx.post(f"{url}/api/suites", headers=h, timeout=30,
                       json={"name": "Fables", "description": "Short fables, two temperatures", "cases": cases})
    suite.raise_for_status()
    sid = suite.json()["id"]
    run = httpx.post(f"{url}/api/suites/{sid}/runs", headers=h, timeout=30,
                     json={"deployments": list(MODELS), "concurrency": 4,
                           "parameter_sets": [{"label": "t0", "temperature": 0, "max_tokens": 40, "seed": 1},
                                              {"label": "t1.0", "temperature": 1.0, "max_tokens": 40, "seed": 1}]})
    run.raise_for_status()
    rid = run.json()["id"]
    wait_until(lambda: httpx.get(f"{url}/api/runs/{rid}", headers=h).json()["run"]["status"] == "completed", 120000)
    page = window.suites
    window.show_page(window.pages.index(window.suites))
    page.refresh()
    wait_until(lambda: page.suite_list.count() >= 1)
    page.open_suite(sid)
    wait_until(lambda: page.results_view.model.results.finished_count() == len(cases) * 4)
    page.tabs.setCurrentIndex(1)
    page.results_view.table.setCurrentIndex(page.results_view.model.index(2, 1))
    shots = grab_in_both_schemes(window, wait, lambda scheme: f"suites-{scheme}.png", 1000, back_to_light=False)
    page.tabs.setCurrentIndex(0)
    wait(500)
    path = OUT / "suites-editor-dark.png"
    window.grab().save(str(path))
    theme.apply("light")
    return [*shots, path]


def hub_for_shots(tmp: Path):
    """The Hub for the Discover shots: this machine cannot reach huggingface.co, so the test suite's stand-in
    (tests/support/hub_standin.py, recorded answers of real repositories around the tiny GGUF) serves them.

    Returns (the started stand-in, the backend's extra environment: its Hub, its model folder and host caches).
    """
    sys.path.insert(0, str(ROOT))
    from tests.support.hub_standin import HubStandin, default_repos

    folder = tmp / "models"
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make-tiny-gguf"), str(folder)],
                          capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        raise SystemExit(f"make-tiny-gguf failed: {made.stderr[-500:]}")
    gguf = Path(made.stdout.strip())
    hub = HubStandin(default_repos(gguf.read_bytes())).start()
    caches = {kind: tmp / f"cache-{kind}" for kind in ("huggingface", "ollama")}
    for path in caches.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {"MODELDECK_HF_ENDPOINT": hub.url, "MODELDECK_MODEL_DIRS": str(folder),
           **{f"MODELDECK_CACHE_DIR_{k.upper()}": str(v) for k, v in caches.items()}}
    return hub, env


def library_shots(window, wait, wait_until) -> list[Path]:
    """Discover (results, and a model page after a download) and Library, light and dark."""
    from tests.support.hub_standin import GGUF_REPO

    page = window.discover
    window.show_page(window.pages.index(page))
    page.search("Qwen2.5")
    wait_until(lambda: bool(page.results))
    shots = grab_in_both_schemes(window, wait, lambda scheme: f"discover-results-{scheme}.png")
    page.open_model(GGUF_REPO)
    wait_until(lambda: bool(page.variants))
    page.select_variant("Q4_K_M")
    page.download_selected()
    wait_until(lambda: any(j.get("state") == "done" for j in page.downloads.jobs.values()), 60000)
    page.select_variant("Q8_0")
    wait(1500)
    shots += grab_in_both_schemes(window, wait, lambda scheme: f"discover-model-{scheme}.png")
    library = window.library
    window.show_page(window.pages.index(library))
    library.refresh()
    wait_until(lambda: len(library.models) >= 2)
    library.table.selectRow(0)
    shots += grab_in_both_schemes(window, wait, lambda scheme: f"library-{scheme}.png")
    return shots


def on_demand_shots(window, url: str, wait, wait_until) -> list[Path]:
    """Models on demand (issue 14): a pinned model, a countdown, an unloaded one; the Monitor's loads and
    unloads; the launch dialog's fields; the playground offering the unloaded model. Light and dark."""
    from desktop import theme
    from desktop.pages.launch_dialog import LaunchDialog

    h = {"Authorization": f"Bearer {TOKEN}"}
    name = "demo-on-request"
    r = httpx.post(f"{url}/api/deployments", headers=h, timeout=60,
                   json={"recipe": "demo", "model": "demo-tiny", "served_name": name, "idle_ttl_s": 0})
    r.raise_for_status()
    dep_id = r.json()["id"]
    shots: list[Path] = []
    try:
        wait_until(lambda: httpx.get(f"{url}/api/deployments/{dep_id}", headers=h).json().get("ready"), 120000)
        chat = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        httpx.post(f"{url}/v1/chat/completions", headers=h, timeout=60, json={**chat, "model": name})
        httpx.post(f"{url}/api/deployments/{dep_id}/stop", headers=h, timeout=60).raise_for_status()
        httpx.patch(f"{url}/api/deployments/{MODELS[0]}", headers=h, timeout=30, json={"pinned": True})
        httpx.patch(f"{url}/api/deployments/{MODELS[1]}", headers=h, timeout=30, json={"idle_ttl_s": 600})
        httpx.post(f"{url}/v1/chat/completions", headers=h, timeout=60, json={**chat, "model": MODELS[1]})
        wait_until(lambda: httpx.get(f"{url}/api/deployments/{dep_id}", headers=h).json().get("loads_on_request"))
        for page, stem in ((window.deployments, "on-demand-deployments"), (window.monitor, "on-demand-monitor")):
            window.show_page(window.pages.index(page))
            for scheme in ("light", "dark"):
                theme.apply(scheme)
                wait(2500)
                if page is window.deployments:
                    page.select(dep_id)
                path = OUT / f"{stem}-{scheme}.png"
                window.grab().save(str(path))
                shots.append(path)
        theme.apply("light")
        window.show_page(window.pages.index(window.playground))
        window.playground.refresh_models()
        wait_until(lambda: window.playground.columns[0].model_combo.findData(name) >= 0)
        window.playground.compare_check.setChecked(False)
        window.playground.columns[0].select_model(name)
        wait(800)
        path = OUT / "on-demand-playground.png"
        window.grab().save(str(path))
        shots.append(path)
        recipe = next(c.recipe for c in window.models.cards if c.recipe["name"] == "demo")
        for scheme in ("light", "dark"):
            theme.apply(scheme)
            dialog = LaunchDialog(window.client, recipe, window)
            dialog.served.setText("demo-small")
            dialog.idle_ttl.set_value(900)
            dialog.mem_limit.setText("1g")
            dialog.show()
            wait(1500)
            path = OUT / f"on-demand-launch-dialog-{scheme}.png"
            dialog.grab().save(str(path))
            shots.append(path)
            dialog.close()
        theme.apply("light")
    finally:
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=h, timeout=60)
    return shots


def nodes_shots(window, url: str, wait, wait_until) -> list[Path]:
    """Settings → Nodes and the Deployments page's Node column, light and dark, with a second machine.

    The machine is the tests' simulated one (tests/support/remote_node.py: a network namespace with
    its own sshd, dockerd and backend), so this needs root; without it the pictures show this machine
    alone, and say why on the terminal.
    """
    from PySide6.QtWidgets import QGroupBox, QScrollArea

    h = {"Authorization": f"Bearer {TOKEN}"}
    node_name, node, dep_id = "gpu-box", None, None
    try:
        from backend.base_image import pick_base_image
        from backend.engine import Engine
        from tests.support.remote_node import RemoteNode

        # The node gets the demo image the local backend built (its tag follows the base image).
        base = os.environ.get("MODELDECK_DEMO_BASE_IMAGE") or pick_base_image(None, Engine().image_exists)
        demo = httpx.get(f"{url}/api/deployments/{MODELS[0]}", headers=h, timeout=30).json()["image"]
        node = RemoteNode(images=(demo,), demo_base_image=base).start()
        body = {"name": node_name, "transport": "ssh", "remote_home": str(node.remote_home),
                "ssh": {"host": node.ip, "user": node.user, "identity_file": str(node.client_key)}}
        r = httpx.post(f"{url}/api/nodes", json=body, headers=h, timeout=120)
        if r.status_code == 409:  # the unknown host key: trusted here as a person does after comparing it
            fingerprint = r.json()["error"]["details"]["fingerprint"]
            r = httpx.post(f"{url}/api/nodes/{node_name}/trust", json={"fingerprint": fingerprint}, headers=h,
                           timeout=120)
        r.raise_for_status()
        r = httpx.post(f"{url}/api/deployments", headers=h, timeout=120,
                       json={"recipe": "demo", "model": "demo-tiny", "served_name": "demo-on-gpu-box",
                             "node": node_name})
        r.raise_for_status()
        dep_id = r.json().get("id") or r.json().get("deployment_id")
    except Exception as exc:  # noqa: BLE001 - whatever it was: the pictures show this machine alone
        print(f"no second machine for the Nodes pictures ({exc}); they show this machine alone")
    shots = []
    try:
        page = window.settings_page
        window.show_page(window.pages.index(page))
        wait_until(lambda: page.nodes.table.rowCount() >= (2 if node else 1) and (
            node is None or "Connected" in [page.nodes.table.item(r, 2).text()
                                            for r in range(page.nodes.table.rowCount())][1:]))
        page.findChild(QScrollArea).ensureWidgetVisible(page.findChild(QGroupBox, "nodesGroup"))
        shots += grab_in_both_schemes(window, wait, lambda scheme: f"{dark_prefix(scheme)}settings-nodes.png")
        deployments = window.deployments
        window.show_page(window.pages.index(deployments))
        wait_until(lambda: node is None or any(r.node == node_name for r in deployments.rows.rows), 60000)
        shots += grab_in_both_schemes(window, wait, lambda scheme: f"{dark_prefix(scheme)}deployments-nodes.png")
    finally:
        if dep_id:
            httpx.delete(f"{url}/api/deployments/{dep_id}", headers=h, timeout=60)
        if node is not None:
            httpx.delete(f"{url}/api/nodes/{node_name}", headers=h, timeout=60)
            node.teardown()
    return shots


def main() -> int:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display: still make the pictures
    sys.path.insert(0, str(ROOT))
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop import theme
    from desktop.client import BackendClient
    from desktop.main_window import PAGES, MainWindow
    from desktop.settings_store import DesktopSettings, SettingsStore

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modeldeck-shots-") as tmp:
        home = Path(tmp) / "home"
        hub, hub_env = hub_for_shots(Path(tmp))
        proc, url = start_backend(home, hub_env)
        window = None
        try:
            launch_demos(url)
            app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841 - must outlive the window

            def wait(ms: int) -> None:
                loop = QEventLoop()
                QTimer.singleShot(ms, loop.quit)
                loop.exec()

            def wait_until(predicate, ms: int = 30000) -> None:
                deadline = time.monotonic() + ms / 1000
                while not predicate() and time.monotonic() < deadline:
                    wait(50)

            store = SettingsStore(Path(tmp) / "desktop.ini")
            settings = DesktopSettings(backend_url=url, token=TOKEN, home=str(home), theme="light",
                                       first_run_shown=True)
            store.save(settings)
            theme.apply("light")
            client = BackendClient(url, TOKEN)
            window = MainWindow(client, store, tray=False)
            window.resize(1360, 860)
            window.show()
            window.on_backend_ready(url, TOKEN)
            wait(1500)

            shots = []
            # numbered as the README names them, whatever their place in the navigation
            for number, name in enumerate(["models", "deployments", "playground", "monitor", "settings"], 1):
                index = [key for key, _ in PAGES].index(name)
                window.show_page(index)
                if name == "playground":
                    page = window.playground
                    page.refresh_models()
                    wait_until(lambda: page.columns[0].model_combo.count() >= 2)
                    page.compare_check.setChecked(True)
                    page.columns[0].select_model(MODELS[0])
                    page.columns[1].select_model(MODELS[1])
                    page.max_tokens_spin.setValue(60)
                    page.prompt_edit.setPlainText("Tell me a fable about a fox and a crow.")
                    page.send()
                    wait_until(lambda: not page._pending, 60000)
                    wait(500)
                elif name == "monitor":
                    wait(6000)
                else:
                    wait(1200)
                path = OUT / f"{number}-{name}.png"
                window.grab().save(str(path))
                shots.append(path)
            theme.apply("dark")
            for name in ("playground", "deployments"):  # the pages issue 13 changed (Markdown pieces, column fit)
                window.show_page(window.pages.index(getattr(window, name)))
                wait(1500)
                window.grab().save(str(OUT / f"dark-{name}.png"))
                shots.append(OUT / f"dark-{name}.png")
            dialog = window.show_connect_agent()  # Help → Connect an agent, in both themes
            for scheme in ("dark", "light"):
                theme.apply(scheme)
                wait(800)
                path = OUT / f"{'dark-' if scheme == 'dark' else ''}connect-agent.png"
                dialog.grab().save(str(path))
                shots.append(path)
            dialog.close()
            shots += suites_shots(window, url, wait, wait_until)
            shots += on_demand_shots(window, url, wait, wait_until)
            shots += library_shots(window, wait, wait_until)
            shots += nodes_shots(window, url, wait, wait_until)
            for p in shots:
                print(f"saved {p}")
        finally:
            if window is not None:
                window._quitting = True
                window.shutdown()
                window.close()
            h = {"Authorization": f"Bearer {TOKEN}"}
            for name in MODELS:
                try:
                    httpx.delete(f"{url}/api/deployments/{name}", headers=h, timeout=30)
                except httpx.HTTPError:
                    pass
            proc.terminate()
            proc.wait(timeout=15)
            hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
