"""`modeldeck`: open the main window at once, then attach to (or start) the backend in the background."""

from __future__ import annotations

import argparse
import signal
import socket
import sys

from desktop import platform_libs

# Qt's GUI libraries are imported in Application, not here: main() first checks that the system
# libraries the platform plugin needs are there, and says what to install instead of Qt's abort.


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="modeldeck",
                                     description="ModelDeck: launch local model servers with a click.")
    parser.add_argument("--backend-url", help="the backend to use (default: from Settings, http://127.0.0.1:8765)")
    parser.add_argument("--no-spawn", action="store_true",
                        help="never start a backend; only attach to one that already runs")
    parser.add_argument("--settings-file", help="keep the desktop's settings in this INI file (tests, portable use)")
    parser.add_argument("--self-check", action="store_true",
                        help="open the window, start a backend on a free port with a temporary home, read the "
                             "catalog and the engine, print one line per check and exit (0 when all passed); "
                             "on the platform the app would use (offscreen when there is no display)")
    parser.add_argument("--self-check-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up on the self-check after this long (default 60)")
    return parser.parse_known_args(argv)


class Application:
    """The running desktop: QApplication, settings, client, main window and the backend process."""

    def __init__(self, argv: list[str]):
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QApplication

        from desktop import theme
        from desktop.backend_process import BackendProcess
        from desktop.client import BackendClient
        from desktop.main_window import MainWindow
        from desktop.settings_store import SettingsStore
        from desktop.stall_watchdog import StallWatchdog, threshold_from_env

        args, qt_args = parse_args(argv[1:])
        QApplication.setApplicationName("ModelDeck")
        QApplication.setOrganizationName("ModelDeck")
        QApplication.setApplicationDisplayName("ModelDeck")
        QApplication.setDesktopFileName("modeldeck")
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        self.app = QApplication.instance() or QApplication([argv[0], *qt_args])
        self.store = SettingsStore(args.settings_file)
        self.settings = self.store.load()
        if args.backend_url:
            self.settings.backend_url = args.backend_url.rstrip("/")
        theme.apply(self.settings.theme)
        self.app.setWindowIcon(theme.app_icon())
        self.client = BackendClient(self.settings.backend_url, self.settings.effective_token())
        self.backend = BackendProcess(self.client, self.settings, spawn=not args.no_spawn)
        self.window = MainWindow(self.client, self.store, backend=self.backend)
        # Always on: a GUI-thread stall over 50 ms (MODELDECK_STALL_MS) goes to stderr with its stack.
        self.watchdog = StallWatchdog(self.app, threshold_ms=threshold_from_env())
        self.app.aboutToQuit.connect(self._on_app_about_to_quit)
        self._quit_on_signals()

    def _quit_on_signals(self) -> None:
        """SIGTERM (logout, `kill`), SIGHUP (terminal closed) and Ctrl+C quit like Ctrl+Q does.

        Python runs its signal handlers only between bytecodes, and Qt's event loop runs none:
        the handler's wake-up byte goes through a socket that a QSocketNotifier watches, so the
        quit happens on the GUI thread at once and the backend this window started stops with it.
        """
        from PySide6.QtCore import QSocketNotifier

        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._signal_sockets = (reader, writer)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, lambda *_: None)  # the wake-up byte is what counts
        self._signal_notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read, self.app)
        self._signal_notifier.activated.connect(self._on_signal_notifier_activated)

    def _on_signal_notifier_activated(self, *_args) -> None:
        reader = self._signal_sockets[0]
        try:
            received = reader.recv(64)
        except BlockingIOError:
            return
        if received:
            names = ", ".join(sorted({signal.Signals(b).name for b in received if b in signal.Signals._value2member_map_}))
            print(f"modeldeck: {names or 'signal'} received, quitting", file=sys.stderr, flush=True)
            self.app.quit()

    def run(self) -> int:
        self.window.show()
        self.watchdog.start()
        self.backend.start()  # answers arrive through signals; the window is already up
        return self.app.exec()

    def _on_app_about_to_quit(self) -> None:
        self.watchdog.stop()
        self.window.shutdown()
        self.backend.stop(wait=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `modeldeck` command; returns the exit code."""
    argv = list(sys.argv if argv is None else argv)
    args, qt_args = parse_args(argv[1:])
    if args.self_check:
        from desktop import self_check
        return self_check.run(argv[0], Application, args.self_check_timeout)
    problem = platform_libs.preflight(qt_args=qt_args)
    if problem:
        print(problem, file=sys.stderr, flush=True)
        return 1
    return Application(argv).run()


if __name__ == "__main__":
    sys.exit(main())
