"""desktop/widgets/markdown_view.py renders in pieces: the same document as one render, at a bounded cost per update."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QTextDocument, QTextFormat

from desktop.widgets.markdown_view import PIECE_CHARS, MarkdownView, next_cut

pytestmark = pytest.mark.gui

REPLY = """#### You

Explain lists.

---

#### model

Here is a list:

1. first item
2. second item

   continued paragraph of the second item

3. third

Some **bold** and `code` text.

```python
def f():

    return 1
```

- a
- b

> a quote

| a | b |
|---|---|
| 1 | 2 |

Done.

*TTFT 0.1 s · 10 tok/s*"""


def _blocks(document: QTextDocument) -> list[tuple]:
    """What a reader sees of each block: its text, heading level, list number, whether it is code or a rule."""
    out = []
    block = document.begin()
    while block.isValid():
        fmt = block.blockFormat()
        listed = block.textList()
        out.append((block.text(), fmt.headingLevel(), listed.itemNumber(block) if listed else None,
                    fmt.hasProperty(QTextFormat.Property.BlockCodeFence),
                    fmt.hasProperty(QTextFormat.Property.BlockTrailingHorizontalRulerWidth)))
        block = block.next()
    return out


@pytest.mark.parametrize("step", [1, 7, 40])
def test_a_streamed_reply_renders_as_one_render_of_the_whole_text(qtbot, step):
    view = MarkdownView()
    qtbot.addWidget(view)
    for end in range(step, len(REPLY) + step, step):
        view.set_markdown(REPLY[:end])
        view.flush()
    whole = QTextDocument()
    whole.setMarkdown(REPLY, QTextDocument.MarkdownFeature.MarkdownDialectGitHub)
    assert view.toPlainText() == whole.toPlainText()
    assert _blocks(view.document()) == _blocks(whole)
    assert len(view.document().rootFrame().childFrames()) == 1, "the table is there"


def test_a_change_before_the_end_renders_again_from_there(qtbot):
    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_markdown(REPLY)
    view.flush()
    view.document().begin().setUserState(3)  # the first piece: untouched by a change further on
    view.set_markdown(REPLY.replace("Some **bold**", "Some *italic*"))
    view.flush()
    assert "Some italic and code text." in view.toPlainText() and "Done." in view.toPlainText()
    assert view.document().begin().userState() == 3
    view.set_markdown("Something else")
    view.flush()
    assert view.toPlainText() == "Something else" and view.document().begin().userState() == -1


def test_a_long_paragraph_streams_in_pieces_that_stay_put(qtbot):
    """The bench's reply: tokens with no space or line between them, 30,000 characters in one paragraph."""
    view = MarkdownView()
    qtbot.addWidget(view)
    rendered: list[int] = []  # characters of Markdown rendered by each update
    append = view._append

    def counting_append(markdown: str, joined: bool) -> None:
        rendered[-1] += len(markdown)
        append(markdown, joined)

    view._append = counting_append
    text = "#### model\n\n"
    for i in range(3000):
        text += f"[{i}:3000]"
        if i % 50 == 49:
            rendered.append(0)
            view.set_markdown(text)
            view.flush()
    assert max(rendered[1:]) <= 2 * PIECE_CHARS, "an update renders the unfinished piece, not the reply"
    assert sum(rendered) < 3 * len(text), rendered
    lines = view.toPlainText().split("\n")
    assert max(len(line) for line in lines) <= PIECE_CHARS
    assert "".join(lines[1:]) == "".join(f"[{i}:3000]" for i in range(3000)), "nothing lost or doubled"


def test_pieces_end_at_blank_lines_outside_code_and_lists():
    assert next_cut("one\n\ntwo\n", 0) == (5, False)
    assert next_cut("1. a\n\n100", 0) is None, "the next line may yet be a list item"
    assert next_cut("one\n\n", 0) is None, "the next line is not there yet"
    assert next_cut("- a\n\n- b\n\nafter\n", 0) == (10, False), "a loose list stays in one piece"
    assert next_cut("- a\n\n  more of a\n\nafter\n", 0) == (18, False), "an item's continuation too"
    assert next_cut("```\ncode\n\nmore\n```\n\nafter\n", 0) == (20, False), "no cut inside a fence"
    assert next_cut("```\n" + "x = 1 " * 1000, 0) is None, "a long code block is not cut"
    cut, cut_paragraph = next_cut("word " * 1000, 0)
    assert cut_paragraph and cut <= PIECE_CHARS and ("word " * 1000)[cut - 1] == " ", "cut after a space"
    assert next_cut("x" * (PIECE_CHARS + 5), 0) == (PIECE_CHARS, True)
