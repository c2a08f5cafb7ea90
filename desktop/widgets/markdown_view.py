"""A read-only Markdown view for streaming replies: tokens appended at once, Markdown re-rendered at a bounded cost."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QTextBlockFormat, QTextCursor, QTextDocument, QTextFormat
from PySide6.QtWidgets import QTextBrowser, QWidget

MAX_RENDER_HZ = 20
#: A full render may take at most this share of the GUI thread: the next one waits
#: ``1 / RENDER_SHARE`` times as long as the last one took (a long reply renders less often).
RENDER_SHARE = 0.1
MAX_RENDER_INTERVAL_MS = 2000


class MarkdownView(QTextBrowser):
    """Shows Markdown text that may change many times a second (one token per change).

    When the text only grew (a streaming reply), the new characters are appended to the
    document at once as plain text: cheap, and the reply visibly streams token by token.
    The whole text is re-rendered as Markdown by a single-shot timer, at most 20 times a
    second and never more than ``RENDER_SHARE`` of the time: a full render of a long
    transcript costs tens of milliseconds, and four columns re-rendering at 20 Hz each
    stalled the GUI thread. ``flush()`` renders at once. The view follows the end of the
    text while the person has not scrolled up.

    Signals:
        rendered(): the document was just re-rendered as Markdown from the latest text.
    """

    rendered = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setReadOnly(True)
        self._pending: str | None = None
        self._text = ""  # the text of the last full Markdown render
        self._shown = ""  # the text the document holds now (rendered prefix + appended tail)
        self._interval_ms = 1000 // MAX_RENDER_HZ
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(1000 // MAX_RENDER_HZ)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.document().setDocumentMargin(10)
        self._code_format = QTextBlockFormat()
        self._code_format.setBackground(QColor(127, 127, 127, 36))
        self._code_format.setLeftMargin(6)

    def markdown_text(self) -> str:
        """The latest text given, rendered or not yet."""
        return self._pending if self._pending is not None else self._text

    def set_markdown(self, text: str) -> None:
        """Show ``text``: new trailing characters at once, its Markdown rendering soon after."""
        self._pending = text
        if len(text) > len(self._shown) and text.startswith(self._shown):
            bar = self.verticalScrollBar()
            follow = bar.value() >= bar.maximum() - 4
            cursor = QTextCursor(self.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText(text[len(self._shown):])
            self._shown = text
            if follow:
                bar.setValue(bar.maximum())
        if not self._timer.isActive():
            self._timer.start(self._interval_ms)

    def flush(self) -> None:
        """Render the latest text now (the end of a stream, a reopened transcript)."""
        self._timer.stop()
        self._on_timer_timeout()

    def _on_timer_timeout(self) -> None:
        if self._pending is None:
            return
        text, self._pending = self._pending, None
        if text == self._text:
            return
        self._text = self._shown = text
        bar = self.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4
        keep = bar.value()
        started = time.perf_counter()
        self.document().setMarkdown(text, QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
        self._shade_code_blocks()
        bar.setValue(bar.maximum() if follow else keep)
        spent_ms = (time.perf_counter() - started) * 1000
        self._interval_ms = int(min(MAX_RENDER_INTERVAL_MS, max(1000 // MAX_RENDER_HZ, spent_ms / RENDER_SHARE)))
        self.rendered.emit()

    def _shade_code_blocks(self) -> None:
        """Give fenced code blocks a background (Qt's Markdown import sets only their monospace font)."""
        block = self.document().begin()
        cursor = None
        while block.isValid():
            if block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence):
                cursor = cursor or QTextCursor(self.document())
                cursor.setPosition(block.position())
                cursor.mergeBlockFormat(self._code_format)
            block = block.next()
