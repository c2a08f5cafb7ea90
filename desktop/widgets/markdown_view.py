"""A read-only Markdown view for streaming replies, rendered in pieces: an update costs the same at any length."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import (QColor, QTextBlockFormat, QTextCharFormat, QTextCursor, QTextDocument,
                           QTextDocumentFragment, QTextFormat)
from PySide6.QtWidgets import QTextBrowser, QWidget

from desktop import fonts

MAX_RENDER_HZ = 10
#: An update may take at most this share of the GUI thread: the next one waits
#: ``1 / RENDER_SHARE`` times as long as the last one took.
RENDER_SHARE = 0.1
MAX_RENDER_INTERVAL_MS = 2000
#: A paragraph longer than this is shown as several blocks, cut at a space where there is one:
#: Qt lays out a whole block again on every change, so one 30,000-character paragraph cost
#: 100-230 ms per update on a busy machine (the stall watchdog's stacks, issue 13).
PIECE_CHARS = 1500
#: Settling many pieces at once (a reopened long transcript) stops after this long; the rest
#: follows on the next turns of the event loop. ``flush()`` has no such limit.
SLICE_S = 0.008
#: The unfinished piece is rendered as Markdown at most this often; in between, what it grew by
#: is added as plain text (rendering it 20 times a second in four columns took a fifth of a core).
TAIL_RENDER_EVERY_S = 1.0
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r" {0,3}([-+*]|\d{1,9}[.)])( |$)")
_BLOCK_START = re.compile(r"\s*([#>+*|=`~-]|\d{1,9}[.)])")
_MD = QTextDocument.MarkdownFeature.MarkdownDialectGitHub


@dataclass(frozen=True)
class _Piece:
    """A settled piece of the text: rendered once, never touched again while the text only grows."""

    text_end: int  # where it ends in the text (exclusive)
    doc_end: int  # the document position just after its last character
    cut: bool  # it ends inside a paragraph (a long one cut at PIECE_CHARS)


def next_cut(text: str, start: int, piece_chars: int = PIECE_CHARS) -> tuple[int, bool] | None:
    """Where the first complete piece of ``text[start:]`` ends and whether it cuts a paragraph; None if none yet.

    A piece ends after a blank line outside a fenced code block when the next line begins a new,
    unindented block that is not a list item (so a list, and an item's indented continuation,
    stay in one piece with the lines before them). Without such a line, a run of prose longer
    than ``piece_chars`` is cut at its last space before that length (or at the length itself).
    """
    fence: str | None = None
    i = start
    size = len(text)
    while True:
        j = text.find("\n", i)
        if j < 0:
            break
        line = text[i:j]
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) \
                    and not line[opened.end():].strip():
                fence = None
        elif opened:
            fence = opened.group(1)
        elif not line.strip() and i > start:
            k = j + 1
            while k < size and text[k] == "\n":
                k += 1
            nxt_end = text.find("\n", k)
            if nxt_end >= 0 or size - k >= 12:  # enough of the next line to tell what it starts
                nxt = text[k:nxt_end if nxt_end >= 0 else size]
                if nxt and not nxt[0].isspace() and not _LIST_ITEM.match(nxt):
                    return k, False
        i = j + 1
    if fence is not None or size - start <= piece_chars:
        return None
    end = start + piece_chars
    space = text.rfind(" ", start + piece_chars // 2, end)
    return (space + 1 if space >= 0 else end), True


_MARK = "\u2060"  # a word joiner: what merges into the block before when a piece is inserted (then removed)


def _lead_with_mark(scratch: QTextDocument) -> QTextDocument:
    """``scratch`` with a block before its first that holds only :data:`_MARK`, in no format.

    Inserting a fragment merges its first block into the block at the cursor, which keeps its
    own format (a heading or a list item would be lost, or a list item would turn the block
    before into one). The lead block is what merges; an empty one would not be merged but
    inserted as a block of its own, so it holds one character, removed after the insertion.
    """
    head = scratch.begin()
    if head.text() or scratch.blockCount() == 1:
        block_format, char_format = head.blockFormat(), head.charFormat()
        QTextCursor(head).insertBlock()  # at 0: the new block is the first, the text moves to the second
        lead, first = scratch.begin(), scratch.begin().next()
        # A block's list is in its format (the object index): the text's block joins first, then the lead leaves.
        QTextCursor(first).setBlockFormat(block_format)
        QTextCursor(first).setBlockCharFormat(char_format)
    else:
        lead = head  # Qt's import put an empty block before a rule itself
    cursor = QTextCursor(lead)
    cursor.setBlockFormat(QTextBlockFormat())
    cursor.setBlockCharFormat(QTextCharFormat())
    cursor.insertText(_MARK, QTextCharFormat())
    return scratch


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix (compared a block at a time: the texts are long, their change short)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, step = 0, 4096
    while lo + step <= n and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


class MarkdownView(QTextBrowser):
    """Shows Markdown text that may change many times a second (one token per change).

    ``set_markdown`` only records the text; a single-shot timer updates the document, at most
    ``MAX_RENDER_HZ`` times a second. The text is rendered in pieces (see :func:`next_cut`):
    a piece that is complete is rendered once and kept, and an update renders again only the
    unfinished piece at the end (at most every ``TAIL_RENDER_EVERY_S``; in between, its growth
    is added as plain text), so its cost does not grow with the length of the reply (with
    one ``setMarkdown`` of the whole text, and appends to one growing paragraph, a four-column
    60 s stream stalled the GUI thread by up to 230 ms). A change that is not at the end
    renders again from the first piece it touches. ``flush()`` renders at once. The view
    follows the end of the text while the person has not scrolled up.

    Signals:
        rendered(): the document was just updated from the latest text.
    """

    rendered = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setReadOnly(True)
        self._pending: str | None = None
        self._shown = ""  # the text the document holds
        self._pieces: list[_Piece] = []
        self._blank = True  # nothing rendered since the document was last cleared
        self._tail_rendered_at = 0.0  # perf_counter() when the unfinished piece was last rendered as Markdown
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
        """Render the latest text now (the end of a stream, a reopened transcript)."""
        self._timer.stop()
        self._update(budget_s=None)

    def _on_timer_timeout(self) -> None:
        self._update(budget_s=SLICE_S)

    def _update(self, budget_s: float | None) -> None:
        text = self.markdown_text()
        self._pending = None
        started = time.perf_counter()
        bar = self.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 4
        keep = bar.value()
        if budget_s is not None and self._grows_unfinished_piece(text, started):
            # Between renders of the unfinished piece, what it grew by is added as it is.
            cursor = QTextCursor(self.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText(text[len(self._shown):])
            self._shown = text
            bar.setValue(bar.maximum() if follow else keep)
            self.rendered.emit()
            return
        common = _common_prefix(text, self._shown)
        while self._pieces and self._pieces[-1].text_end > common:
            self._pieces.pop()
        start = self._pieces[-1].text_end if self._pieces else 0
        self._drop_after(self._pieces[-1].doc_end if self._pieces else 0)
        unfinished = False
        while (cut := next_cut(text, start)) is not None:
            if budget_s is not None and time.perf_counter() - started > budget_s:
                unfinished = True
                break
            end, cut_paragraph = cut
            self._append(text[start:end], joined=bool(self._pieces) and self._pieces[-1].cut)
            self._pieces.append(_Piece(end, self.document().characterCount() - 1, cut_paragraph))
            start = end
        if unfinished:  # the rest on the next turn of the event loop
            self._shown = text[:start]
            self._pending = text
            self._timer.start(0)
        else:
            if start < len(text):
                self._append(text[start:], joined=bool(self._pieces) and self._pieces[-1].cut)
            self._shown = text
            self._tail_rendered_at = time.perf_counter()
        bar.setValue(bar.maximum() if follow else keep)
        spent_ms = (time.perf_counter() - started) * 1000
        self._interval_ms = int(min(MAX_RENDER_INTERVAL_MS, max(1000 // MAX_RENDER_HZ, spent_ms / RENDER_SHARE)))
        self.rendered.emit()

    def _grows_unfinished_piece(self, text: str, now: float) -> bool:
        """``text`` only adds to the unfinished piece, which was rendered as Markdown a moment ago."""
        return (now - self._tail_rendered_at < TAIL_RENDER_EVERY_S and len(text) > len(self._shown)
                and text.startswith(self._shown)
                and next_cut(text, self._pieces[-1].text_end if self._pieces else 0) is None)

    def _drop_after(self, position: int) -> None:
        """Remove everything after ``position`` (the end of the last piece kept), or all of it at 0."""
        document = self.document()
        if position == 0:
            document.clear()
            self._blank = True
            return
        if position < document.characterCount() - 1:
            kept = document.findBlock(position)
            block_format, char_format = kept.blockFormat(), kept.charFormat()
            cursor = QTextCursor(document)
            cursor.setPosition(position)
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            cursor.removeSelectedText()  # the block kept takes the format of the last one removed: give it back
            if cursor.blockFormat() != block_format:
                cursor.setBlockFormat(block_format)
            if cursor.blockCharFormat() != char_format:
                cursor.setBlockCharFormat(char_format)

    def _append(self, markdown: str, joined: bool) -> None:
        """Render ``markdown`` after what the document holds, in blocks of its own.

        It is rendered in a scratch document and inserted as a fragment: ``insertMarkdown``
        would merge its first block into the block before (losing a heading's format). The
        first block of the fragment is given its own block first, with the format it had there,
        except for a list item, which the fragment brings its own block for. ``joined``: this
        continues a paragraph cut at ``PIECE_CHARS``, so the two blocks are set without the space
        between paragraphs.
        """
        starts_block = _BLOCK_START.match(markdown) if joined else None
        if starts_block:  # a cut paragraph's rest is prose, even if it starts like a list or a heading
            marker = starts_block.group(1)
            rest = markdown[starts_block.end():]
            markdown = f"{marker[:-1]}\\{marker[-1]}{rest}" if marker[0].isdigit() else f"\\{marker}{rest}"
        document = self.document()
        if self._blank:
            self._blank = False
            document.setMarkdown(markdown, _MD)
            self._style_code(document.begin())
            return
        # Formats are set in the scratch document: changed in the view, each would lay its block out again.
        scratch = QTextDocument()
        scratch.setMarkdown(markdown, _MD)
        self._style_code(scratch.begin())
        if joined:
            tight = QTextBlockFormat()
            tight.setTopMargin(0)
            QTextCursor(scratch).mergeBlockFormat(tight)
            before = document.lastBlock()
            if before.blockFormat().bottomMargin() != 0:
                tight = QTextBlockFormat()
                tight.setBottomMargin(0)
                QTextCursor(before).mergeBlockFormat(tight)
        cursor = QTextCursor(document)
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if scratch.rootFrame().childFrames():
            # A fragment made from a document with a table brings no table; one made from a
            # selection of all of it does (after the empty block setMarkdown puts before it too).
            cursor.insertBlock(QTextBlockFormat(), QTextCharFormat())
            everything = QTextCursor(scratch)
            everything.select(QTextCursor.SelectionType.Document)
            cursor.insertFragment(QTextDocumentFragment(everything))
        else:
            mark = cursor.position()
            cursor.insertFragment(QTextDocumentFragment(_lead_with_mark(scratch)))
            cursor.setPosition(mark)
            cursor.setPosition(mark + 1, QTextCursor.MoveMode.KeepAnchor)
            if cursor.selectedText() == _MARK:
                cursor.removeSelectedText()


    def _style_code(self, block) -> None:
        """Shade fenced code blocks from ``block`` on and set code in :func:`desktop.fonts.fixed_font`.

        Qt's Markdown import gives code only the family of Qt's fixed font, which may be a font
        that is not fixed-pitch (see desktop/fonts.py), and no background.
        """
        document = block.document()
        fences: list[int] = []
        code: list[tuple[int, int]] = []  # found first, formatted after: formatting merges fragments
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
        cursor = QTextCursor(document)
        for position in fences:
            cursor.setPosition(position)
            cursor.mergeBlockFormat(self._code_format)
        for start, end in code:
            cursor.setPosition(start)
            cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(self._code_font)
