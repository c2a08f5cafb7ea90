"""A read-only Markdown view for streaming replies: re-renders at most 20 times a second, code in monospace."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QTextBlockFormat, QTextCursor, QTextDocument, QTextFormat
from PySide6.QtWidgets import QTextBrowser, QWidget

MAX_RENDER_HZ = 20


class MarkdownView(QTextBrowser):
    """Shows Markdown text that may change many times a second (one token per change).

    ``set_markdown`` only records the text; a single-shot timer renders it at most every
    50 ms, so a fast stream costs at most 20 layouts a second. ``flush()`` renders at once.
    The view follows the end of the text while the person has not scrolled up.

    Signals:
        rendered(): the document was just re-rendered from the latest text.
    """

    rendered = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setReadOnly(True)
        self._pending: str | None = None
        self._text = ""
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
        """Show ``text`` within 50 ms (coalescing changes that come faster)."""
        self._pending = text
        if not self._timer.isActive():
            self._timer.start()

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
        self._text = text
        bar = self.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4
        keep = bar.value()
        self.document().setMarkdown(text, QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
        self._shade_code_blocks()
        bar.setValue(bar.maximum() if follow else keep)
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
