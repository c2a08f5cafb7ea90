"""Finding the backend: attach to one that answers, or start `modeldeck-backend` with QProcess and look after it.

A backend this desktop started is restarted when it dies (after 1, 2, 4, 8 and 15 s; then it
waits for the person's **Restart backend**), and the last lines of its output are kept for the
window's banner. A backend the desktop only attached to is someone else's (a terminal, systemd,
another desktop): its absence is reported, and the desktop never starts a second one in its
place. Deployments are untouched either way: Docker holds them, not the backend.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from desktop.client import ApiError, BackendClient
from desktop.settings_store import DesktopSettings, is_local, port_of
from desktop.widgets.calls import Calls

HEALTH_TIMEOUT_MS = 2000
POLL_MS = 300
START_TIMEOUT_S = 60.0
#: Waits before each automatic restart of a backend this desktop started that died.
RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0)
#: A backend that answered this long is healthy again: its next death starts the back-off anew.
STABLE_S = 60.0


def backend_command(port: int) -> tuple[str, list[str]]:
    """The program and arguments that start a backend on ``port``.

    In a PyInstaller bundle (``sys.frozen``) there is no Python to run ``-m`` with: the bundle's
    own ``modeldeck-backend`` executable sits next to ``modeldeck``. Elsewhere the backend runs
    from the same interpreter as the desktop, so both always come from one install.
    """
    if getattr(sys, "frozen", False):
        name = "modeldeck-backend.exe" if sys.platform == "win32" else "modeldeck-backend"
        return str(Path(sys.executable).with_name(name)), ["--port", str(port)]
    return sys.executable, ["-m", "backend.server", "--port", str(port)]


class BackendProcess(QObject):
    """Attaches to the backend at the configured URL, or spawns one when the URL is local and nothing answers.

    Signals:
        status(str): what it is doing now, in words for the window ("Starting the ModelDeck backend…").
        ready(str, str): the backend answers; its base URL and the token to use.
        failed(str): no backend, and none could be started; what to do.
        died(str): the backend this desktop started exited while in use; title line, then its last
            output lines. A restart follows by itself (``restart_pending``) unless the back-off ran out.
    """

    status = Signal(str)
    ready = Signal(str, str)
    failed = Signal(str)
    died = Signal(str)

    def __init__(self, client: BackendClient, settings: DesktopSettings, *, spawn: bool = True,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.client = client
        self.settings = settings
        self.spawn_allowed = spawn
        self.process: QProcess | None = None
        self.is_ready = False
        self._calls = Calls(client, self)
        self._output = bytearray()
        self._deadline = 0.0
        self._poll = QTimer(self)
        self._poll.setSingleShot(True)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._on_poll_timeout)
        #: True while the backend in use is one this desktop started (kept across its restarts).
        self.started_here = False
        self.restarts = 0  # automatic restarts since the backend was last stable
        self.last_exit: str = ""  # how the last backend this desktop started ended, with its last lines
        self._ready_at = 0.0
        self._restart_timer = QTimer(self)
        self._restart_timer.setSingleShot(True)
        self._restart_timer.timeout.connect(self._on_restart_timer_timeout)

    @property
    def restart_pending(self) -> bool:
        """An automatic restart is scheduled."""
        return self._restart_timer.isActive()

    @property
    def owned(self) -> bool:
        """True when this desktop started the backend (and so stops it on quit)."""
        return self.process is not None

    def start(self, settings: DesktopSettings | None = None) -> None:
        """(Re)connect: check health at the configured URL, spawning a backend if needed and allowed."""
        if settings is not None:
            self.settings = settings
        self.is_ready = False
        self.client.configure(self.settings.backend_url, self.settings.effective_token())
        self.status.emit(f"Connecting to {self.settings.backend_url}…")
        self._calls.get("/api/health", self._on_health_ok, self._on_first_health_failed,
                        timeout_ms=HEALTH_TIMEOUT_MS)

    def _on_health_ok(self, _body) -> None:
        self._poll.stop()
        self.is_ready = True
        self._ready_at = time.monotonic()
        self.started_here = self.owned
        token = self.settings.effective_token()
        self.client.configure(self.settings.backend_url, token)
        where = "started" if self.owned else "attached to"
        self.status.emit(f"ModelDeck backend {where} at {self.settings.backend_url}")
        self.ready.emit(self.settings.backend_url, token)

    def _on_first_health_failed(self, error: ApiError) -> None:
        url = self.settings.backend_url
        if self.owned and self.process.state() != QProcess.ProcessState.NotRunning:
            self._wait_for_spawned()
            return
        if not self.spawn_allowed or not is_local(url):
            why = "" if self.spawn_allowed else " (starting one is turned off: --no-spawn)"
            self.failed.emit(f"No ModelDeck backend answers at {url}{why}. Start it with 'modeldeck-backend', "
                             f"or change the URL in Settings. ({error.message})")
            return
        self._spawn(port_of(url))

    def _spawn(self, port: int) -> None:
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            # Two health checks failed at once (a restart and a reconnect): one backend is enough.
            self._wait_for_spawned()
            return
        env = QProcessEnvironment.systemEnvironment()
        for key, value in self.settings.backend_env().items():
            env.insert(key, value)
        env.insert("PYTHONUNBUFFERED", "1")
        proc = QProcess(self)
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(self._on_process_ready_read)
        proc.finished.connect(self._on_process_finished)
        proc.errorOccurred.connect(self._on_process_error_occurred)
        self.process = proc
        self._output.clear()
        self.status.emit("Starting the ModelDeck backend…")
        proc.start(*backend_command(port))
        self._wait_for_spawned()

    def _wait_for_spawned(self) -> None:
        self._deadline = time.monotonic() + START_TIMEOUT_S
        self._poll.start()

    def _on_poll_timeout(self) -> None:
        if self.is_ready or self.process is None:
            return
        if time.monotonic() > self._deadline:
            self.failed.emit(f"The backend did not answer within {START_TIMEOUT_S:.0f} s.\n{self.output_tail()}")
            return
        self._calls.get("/api/health", self._on_health_ok, self._on_poll_failed, timeout_ms=HEALTH_TIMEOUT_MS)

    def _on_poll_failed(self, _error: ApiError) -> None:
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self._poll.start()

    def _on_process_ready_read(self) -> None:
        if self.process is not None:
            self._output += bytes(self.process.readAllStandardOutput().data())
            del self._output[:-20000]

    def output_tail(self, lines: int = 12) -> str:
        return "\n".join(self._output.decode("utf-8", "replace").splitlines()[-lines:])

    def _on_process_finished(self, code: int, exit_status) -> None:
        sender = self.sender()
        if isinstance(sender, QProcess) and sender is not self.process:
            # A process this object no longer uses (replaced meanwhile): its end must not touch
            # the current one, whose QProcess deleted now would kill a healthy backend.
            sender.deleteLater()
            return
        proc, self.process = self.process, None
        if proc is not None:
            proc.deleteLater()
        how = ("was killed" if exit_status == QProcess.ExitStatus.CrashExit else f"exited with code {code}")
        self.last_exit = f"The ModelDeck backend this window started {how}.\n{self.output_tail()}".rstrip()
        if not self.is_ready:
            self._poll.stop()
            if self.restarts:  # a restart that did not come up: keep backing off
                self._schedule_restart(how)
                return
            self.failed.emit(f"The ModelDeck backend exited (code {code}) before it answered.\n{self.output_tail()}")
            return
        self.is_ready = False
        if time.monotonic() - self._ready_at > STABLE_S:
            self.restarts = 0
        self._schedule_restart(how)

    def _schedule_restart(self, how: str) -> None:
        """Restart the backend this desktop started after the next back-off delay, or give up and say so."""
        tail = self.output_tail()
        if self.restarts >= len(RESTART_DELAYS_S):
            self.died.emit(f"The ModelDeck backend this window started {how} again; it was restarted "
                           f"{self.restarts} times and is not restarted by itself any more.\n{tail}".rstrip())
            return
        delay = RESTART_DELAYS_S[self.restarts]
        self.restarts += 1
        self._restart_timer.start(int(delay * 1000))
        self.died.emit(f"The ModelDeck backend this window started {how}; restarting it in {delay:.0f} s "
                       f"(attempt {self.restarts} of {len(RESTART_DELAYS_S)}).\n{tail}".rstrip())

    def _on_restart_timer_timeout(self) -> None:
        # Through start(): when something already answers at the URL (someone started a backend
        # meanwhile), the desktop attaches to it instead of starting a second one.
        self.start()

    def restart(self) -> None:
        """The person's **Restart backend**: stop the one this desktop started if it still runs, start anew.

        Only for a backend this desktop started; the automatic back-off starts over.
        """
        if not (self.started_here or self.owned):
            return
        self._restart_timer.stop()
        self.restarts = 0
        self.is_ready = False
        proc, self.process = self.process, None
        if proc is not None and proc.state() != QProcess.ProcessState.NotRunning:
            # Still running (hung): the new one starts once it has exited and freed the port.
            self.status.emit("Stopping the ModelDeck backend that does not answer…")
            self._retire(proc, then=self.start)
            return
        if proc is not None:
            self._retire(proc)
        self.start()

    def _retire(self, proc: QProcess, then=None) -> None:
        """Let go of a backend process: asked to stop (SIGTERM), killed after 8 s if it has not,
        deleted once it has exited, then ``then()``. The GUI thread never waits for it.
        """
        proc.finished.disconnect(self._on_process_finished)
        if proc.state() == QProcess.ProcessState.NotRunning:
            proc.deleteLater()
            if then is not None:
                then()
            return
        # Kept alive until it has exited: deleting a running QProcess kills it without a word.
        proc.finished.connect(proc.deleteLater)
        if then is not None:
            proc.finished.connect(lambda *_: then())
        proc.terminate()
        QTimer.singleShot(8000, proc, proc.kill)

    def _on_process_error_occurred(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            proc, self.process = self.process, None
            if proc is not None:
                proc.deleteLater()
            self._poll.stop()
            program, args = backend_command(port_of(self.settings.backend_url))
            self.failed.emit(f"Could not start the ModelDeck backend ({' '.join([program, *args])}).")

    def stop(self, wait: bool = True) -> None:
        """Stop a backend this desktop started (a backend it attached to keeps running).

        Args:
            wait: block until it has exited (up to 10 s: at quit, when the window is gone).
                The window passes False: the backend is asked to stop, killed after 8 s if
                it has not, and the GUI thread never waits for it.
        """
        self._poll.stop()
        self._restart_timer.stop()
        self.started_here = False
        self._calls.abort_all()
        self._calls = Calls(self.client, self)
        proc, self.process = self.process, None
        if proc is None:
            return
        if not wait or proc.state() == QProcess.ProcessState.NotRunning:
            self._retire(proc)
            return
        proc.finished.disconnect(self._on_process_finished)
        proc.terminate()
        if not proc.waitForFinished(8000):
            proc.kill()
            proc.waitForFinished(2000)
        proc.deleteLater()
