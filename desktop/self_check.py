"""`modeldeck --self-check`: open the window, spawn a backend, read the catalog and the engine, report, exit.

Made for a freshly built bundle (CI runs it on Xvfb with xcb): a data file or hidden import that
PyInstaller left out shows up here as a failed line instead of on a user's desktop. It runs the
real start-up path (the ``Application`` that ``desktop.app.main`` hands over: this module never imports
``desktop.app``, which dispatches here) with a throw-away settings file and backend home,
so it never touches the person's own settings, token or window state. It runs on the platform the
app would use (xcb where ``DISPLAY`` is set, Wayland where ``WAYLAND_DISPLAY`` is; offscreen only
when no display is named) and checks that platform's system libraries first (desktop/platform_libs.py).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QTimer

from desktop import platform_libs
from desktop.backend_process import backend_command
from desktop.widgets.calls import Calls

DEFAULT_TIMEOUT_S = 60.0
#: The runtimes containers/ ships; a bundle without its recipes lists none of them.
EXPECTED_RECIPES = frozenset({"demo", "llama-cpp", "ollama", "sglang", "tgi", "vllm"})
#: Checks in report order; "engine" is informative (a missing Docker engine is no fault of the bundle).
CHECKS = ("platform", "window", "assets", "backend", "catalog", "engine", "api-docs")
ENV_IGNORED = ("MODELDECK_TOKEN", "MODELDECK_CATALOG_DIR", "MODELDECK_PORT", "MODELDECK_HOST")


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: ``ok`` None means informative (reported, never a failure)."""

    name: str
    ok: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "INFO"}[self.ok]
        return f"[{mark}] {self.name:<9} {self.detail}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def catalog_result(body) -> CheckResult:
    """Judge an ``/api/catalog`` answer: every recipe containers/ ships must be listed."""
    recipes = body.get("recipes", []) if isinstance(body, dict) else []
    names = sorted(r.get("name", "?") for r in recipes if isinstance(r, dict))
    missing = sorted(EXPECTED_RECIPES - set(names))
    if missing:
        return CheckResult("catalog", False, f"{len(names)} recipes ({', '.join(names) or 'none'}); "
                                             f"missing: {', '.join(missing)}")
    return CheckResult("catalog", True, f"{len(names)} recipes: {', '.join(names)}")


def engine_result(body) -> CheckResult:
    """Report an ``/api/engine`` answer; an unreachable engine is information, not a failure."""
    if not isinstance(body, dict) or "reachable" not in body:
        return CheckResult("engine", False, f"unexpected answer: {str(body)[:120]}")
    if body["reachable"]:
        gpu = "GPU runtime present" if body.get("gpu_runtime") else "no GPU runtime"
        return CheckResult("engine", True, f"{body.get('kind', 'engine')} {body.get('version', '?')} "
                                           f"at {body.get('endpoint', '?')} ({gpu})")
    return CheckResult("engine", None, f"not reachable (not a bundle fault): {body.get('reason') or '?'}")


def docs_result(body) -> CheckResult:
    """``/docs`` inlines Swagger UI from the swagger_ui_bundle package's data files."""
    text = body if isinstance(body, str) else ""
    ok = "swagger" in text.lower() and len(text) > 10_000
    return CheckResult("api-docs", ok, f"/docs served ({len(text)} bytes)" if ok
                       else f"/docs without Swagger UI ({len(text)} bytes)")


def libraries_result(env) -> CheckResult | None:
    """Before Qt loads: a failed "platform" line when the platform the app would use lacks a library.

    With no display named the check runs offscreen, but a person's desktop would use xcb: its
    libraries are checked all the same, so a bundle or machine that cannot show a window fails.
    """
    if not sys.platform.startswith("linux"):
        return None
    if not headless(env):
        problem = platform_libs.preflight(env)
        return CheckResult("platform", False, problem) if problem else None
    problem = platform_libs.preflight({**env, "DISPLAY": ":0"})
    if not problem:
        return None
    return CheckResult("platform", False, f"no display, so offscreen here; on a desktop, {problem.split(': ', 1)[1]}")


def headless(env) -> bool:
    """No platform asked for and no display named: Qt would try xcb and abort."""
    return sys.platform.startswith("linux") and not (env.get("QT_QPA_PLATFORM") or platform_libs.has_display(env))


def platform_result(name: str, env, was_headless: bool) -> CheckResult:
    """After Qt started (so its plugin loaded): which platform it runs on, and why that one."""
    if was_headless:
        return CheckResult("platform", True, "offscreen: no display named (DISPLAY, WAYLAND_DISPLAY unset); "
                                             "xcb's system libraries are all present")
    why = {"xcb": f"X display {env.get('DISPLAY') or '?'}",
           "wayland": f"Wayland display {env.get('WAYLAND_DISPLAY') or 'wayland-0'}"}.get(name)
    return CheckResult("platform", True, f"{name} ({why or 'QT_QPA_PLATFORM=' + env.get('QT_QPA_PLATFORM', '')})")


class SelfCheck(QObject):
    """Drives one check run on a started ``Application``; ``results`` fills in, ``exit_code`` at the end."""

    def __init__(self, application, timeout_s: float, was_headless: bool = False,
                 platform_failure: CheckResult | None = None):
        super().__init__(application.window)
        self.application = application
        self.results: dict[str, CheckResult] = {}
        self._was_headless = was_headless
        self._platform_failure = platform_failure
        self.exit_code = 1
        self._finished = False
        self._timeout_s = timeout_s
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timer_timeout)
        application.backend.ready.connect(self._on_backend_ready)
        application.backend.failed.connect(self._on_backend_failed)
        self._calls = Calls(application.client, self)

    def start(self) -> None:
        """Arm the time limit and check the window and assets once the event loop runs."""
        self._timer.start(int(self._timeout_s * 1000))
        QTimer.singleShot(0, self._check_window)

    def _check_window(self) -> None:
        from desktop import theme
        from desktop.main_window import PlaceholderPage

        from PySide6.QtGui import QGuiApplication

        self._record(self._platform_failure
                     or platform_result(QGuiApplication.platformName(), os.environ, self._was_headless))
        window = self.application.window
        broken = [type(p).__name__ for p in window.pages if isinstance(p, PlaceholderPage)]
        pages = len(window.pages)
        if window.isVisible() and not broken:
            self._record(CheckResult("window", True, f"main window open, {pages} pages"))
        else:
            self._record(CheckResult("window", False, f"visible={window.isVisible()}, "
                                                      f"placeholder pages: {broken or 'none'}"))
        qss = theme.ASSETS / "themes" / "modeldeck.qss"
        if qss.is_file() and not theme.app_icon().isNull():
            self._record(CheckResult("assets", True, f"theme and icons from {theme.ASSETS}"))
        else:
            self._record(CheckResult("assets", False, f"theme or app icon missing under {theme.ASSETS}"))

    def _on_backend_ready(self, base_url: str, _token: str) -> None:
        backend = self.application.backend
        program = Path(backend_command(0)[0]).name
        how = f"spawned ({program})" if backend.owned else "attached to one already running, not spawned"
        self._record(CheckResult("backend", backend.owned, f"{how} at {base_url}"))
        calls = self._calls
        calls.get("/api/catalog", lambda b: self._record(catalog_result(b)),
                  lambda e: self._record(CheckResult("catalog", False, e.message)))
        calls.get("/api/engine", lambda b: self._record(engine_result(b)),
                  lambda e: self._record(CheckResult("engine", False, e.message)), timeout_ms=30000)
        calls.get("/docs", lambda b: self._record(docs_result(b)),
                  lambda e: self._record(CheckResult("api-docs", False, e.message)))

    def _on_backend_failed(self, message: str) -> None:
        self._record(CheckResult("backend", False, message.replace("\n", "\n            ")))
        self._finish()

    def _on_timer_timeout(self) -> None:
        for name in CHECKS:
            if name not in self.results:
                self.results[name] = CheckResult(name, False, f"no answer within {self._timeout_s:.0f} s")
        tail = self.application.backend.output_tail()
        if tail:
            print("backend output:\n" + tail, flush=True)
        self._finish()

    def _record(self, result: CheckResult) -> None:
        if self._finished or result.name in self.results:
            return
        self.results[result.name] = result
        if all(name in self.results for name in CHECKS):
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._timer.stop()
        self._calls.abort_all()
        for name in CHECKS:
            if name not in self.results:
                self.results[name] = CheckResult(name, False, "not reached")
        for name in CHECKS:
            print(self.results[name].line(), flush=True)
        self.exit_code = 0 if all(r.ok is not False for r in self.results.values()) else 1
        print("self-check " + ("passed" if self.exit_code == 0 else "FAILED"), flush=True)
        self.application.app.exit(self.exit_code)


def run(argv0: str, make_application: Callable[[list[str]], object], timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Run the self-check in this process; returns 0 when every check passed (see module docstring).

    ``make_application(argv)`` builds the app as ``modeldeck`` would (``desktop.app.Application``).
    """
    origin = f"{'bundle' if getattr(sys, 'frozen', False) else 'source'}: {Path(sys.executable).parent}"
    libraries = libraries_result(os.environ)
    was_headless = headless(os.environ)
    if was_headless:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # servers and CI without Xvfb have no display
    elif libraries:  # Qt would abort with its own message: say what is missing instead, and stop
        print(f"ModelDeck self-check ({origin})", flush=True)
        print(libraries.line(), flush=True)
        print("self-check FAILED", flush=True)
        return 1
    for key in ENV_IGNORED:  # check the bundle's own catalog and a fresh token, whatever the shell says
        os.environ.pop(key, None)

    from desktop.settings_store import DesktopSettings, SettingsStore

    with tempfile.TemporaryDirectory(prefix="modeldeck-self-check-") as tmp:
        ini = Path(tmp) / "desktop.ini"
        url = f"http://127.0.0.1:{free_port()}"
        SettingsStore(ini).save(DesktopSettings(backend_url=url, home=str(Path(tmp) / "home")))
        print(f"ModelDeck self-check ({origin}), backend at {url}, limit {timeout_s:.0f} s", flush=True)
        try:
            application = make_application([argv0, "--settings-file", str(ini)])
        except Exception as exc:  # a missing asset or module fails here, before there is a window
            print(CheckResult("window", False, f"the app did not start: {exc!r}").line(), flush=True)
            print("self-check FAILED", flush=True)
            return 1
        check = SelfCheck(application, timeout_s, was_headless, libraries)
        check.start()
        application.run()
        application.window.close()
        application.backend.stop(wait=True)  # also on aboutToQuit; idempotent
        return check.exit_code
