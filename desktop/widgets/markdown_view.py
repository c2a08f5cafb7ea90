"""A read-only Markdown view for streaming replies: updates coalesced, their cost bounded, code in monospace."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QTextBlockFormat, QTextCharFormat, QTextCursor, QTextDocument, QTextFormat
from PySide6.QtWidgets import QTextBrowser, QWidget

from desktop import fonts

MAX_RENDER_HZ = 20
#: A full render may take at most this share of the GUI thread: the next one waits
#: ``1 / RENDER_SHARE`` times as long as the last one took (a long reply renders less often).
RENDER_SHARE = 0.1
MAX_RENDER_INTERVAL_MS = 2000
FULL_RENDER_EVERY_S = 1.0  # between full renders, growth is appended as plain text


class MarkdownView(QTextBrowser):
    """Shows Markdown text that may change many times a second (one token per change).

    ``set_markdown`` only records the text; a single-shot timer updates the document. An
    update that only adds to the end appends the new characters as plain text; at most once
    a second (and whenever the text changed otherwise) the whole text is rendered as
    Markdown instead. Both cost time in proportion to the length of the paragraph being
    laid out (Qt lays out a whole block again on every change), so the next update waits
    ``1 / RENDER_SHARE`` times as long as this one took, and at least 50 ms: a long reply
    updates less often instead of stalling the GUI thread (measured: four columns of
    3,000-token replies appending per token took over half of it). ``flush()`` renders
    at once. The view follows the end of the text while the person has not scrolled up.

    Signals:
        rendered(): the document was just updated from the latest text.
    """

    rendered = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setReadOnly(True)
        self._pending: str | None = None
        self._shown = ""  # the text the document holds (rendered, plus any appended tail)
        self._last_full = 0.0
        self._interval_ms = 1000 // MAX_RENDER_HZ
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.document().setDocumentMargin(10)
        self._code_format = QTextBlockFormat()
        self._code_format.setBackground(QColor(127, 127, 127, 36))
        self._code_format.setLeftMargin(6)
        self._code_font = QTextCharFormat()
        self._code_font.setFontFamilies(fonts.fixed_font().families())
        self._code_font.setFontFixedPitch(True)

    def markdown_text(self) -> str:
        """The latest text given, shown or not yet."""
        return self._pending if self._pending is not None else self._shown

    def set_markdown(self, text: str) -> None:
        """Show ``text`` soon (coalescing changes that come faster than the view updates)."""
        self._pending = text
        if not self._timer.isActive():
            self._timer.start(self._interval_ms)

    def flush(self) -> None:
        """Render the latest text as Markdown now (the end of a stream, a reopened transcript)."""
        self._timer.stop()
        self._update(full=True)

    def _on_timer_timeout(self) -> None:
        self._update(full=False)

    def _update(self, full: bool) -> None:
        text = self._pending if self._pending is not None else self._shown
        self._pending = None
        started = time.perf_counter()
        grew = len(text) > len(self._shown) and text.startswith(self._shown)
        full = full or not grew or started - self._last_full >= FULL_RENDER_EVERY_S
        if not full and text == self._shown:
            return
        bar = self.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4
        keep = bar.value()
        if full:
            self.document().setMarkdown(text, QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
            self._style_code()
            self._last_full = time.perf_counter()
        else:
            cursor = QTextCursor(self.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText(text[len(self._shown):])
        self._shown = text
        bar.setValue(bar.maximum() if follow else keep)
        spent_ms = (time.perf_counter() - started) * 1000
        self._interval_ms = int(min(MAX_RENDER_INTERVAL_MS, max(1000 // MAX_RENDER_HZ, spent_ms / RENDER_SHARE)))
        self.rendered.emit()

    def _style_code(self) -> None:
        """Shade fenced code blocks and set code in :func:`desktop.fonts.fixed_font`.

        Qt's Markdown import gives code only the family of Qt's fixed font, which may be a font
        that is not fixed-pitch (see desktop/fonts.py), and no background.
        """
        fences: list[int] = []
        code: list[tuple[int, int]] = []  # found first, formatted after: formatting merges fragments
        block = self.document().begin()
        while block.isValid():
            fence = block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence)
            if fence:
                fences.append(block.position())
            it = block.begin()
            while not it.atEnd():
                fragment = it.fragment()
                if fence or fragment.charFormat().fontFixedPitch():  # a code block, or `inline code`
                    code.append((fragment.position(), fragment.position() + fragment.length()))
                it += 1
            block = block.next()
        cursor = QTextCursor(self.document())
        for position in fences:
            cursor.setPosition(position)
            cursor.mergeBlockFormat(self._code_format)
        for start, end in code:
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(self._code_font)
