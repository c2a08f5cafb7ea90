"""`modeldeck`: open the main window at once, then attach to (or start) the backend in the background."""

from __future__ import annotations

import argparse
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
        from desktop.gc_guard import GuiThreadGarbageCollector
        from desktop.main_window import MainWindow
        from desktop.settings_store import SettingsStore

        args, qt_args = parse_args(argv[1:])
        QApplication.setApplicationName("ModelDeck")
        QApplication.setOrganizationName("ModelDeck")
        QApplication.setApplicationDisplayName("ModelDeck")
        QApplication.setDesktopFileName("modeldeck")
        QApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        self.app = QApplication.instance() or QApplication([argv[0], *qt_args])
        self.gc_guard = GuiThreadGarbageCollector(self.app)
        self.store = SettingsStore(args.settings_file)
        self.settings = self.store.load()
        if args.backend_url:
            self.settings.backend_url = args.backend_url.rstrip("/")
        theme.apply(self.settings.theme)
        self.app.setWindowIcon(theme.app_icon())
        self.client = BackendClient(self.settings.backend_url, self.settings.effective_token())
        self.backend = BackendProcess(self.client, self.settings, spawn=not args.no_spawn)
        self.window = MainWindow(self.client, self.store, backend=self.backend)
        self.app.aboutToQuit.connect(self._on_app_about_to_quit)

    def run(self) -> int:
        self.window.show()
        self.backend.start()  # answers arrive through signals; the window is already up
        return self.app.exec()

    def _on_app_about_to_quit(self) -> None:
        self.window.shutdown()
        self.backend.stop(wait=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `modeldeck` command; returns the exit code."""
    argv = list(sys.argv if argv is None else argv)
    args, qt_args = parse_args(argv[1:])
    if args.self_check:
        from desktop import self_check
        return self_check.run(argv[0], args.self_check_timeout)
    problem = platform_libs.preflight(qt_args=qt_args)
    if problem:
        print(problem, file=sys.stderr, flush=True)
        return 1
    return Application(argv).run()


if __name__ == "__main__":
    sys.exit(main())
