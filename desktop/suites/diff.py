"""Differences between two answers, word by word (difflib), as HTML with the changed words marked."""

from __future__ import annotations

import difflib
import html
import re

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """Words, runs of white space and single punctuation marks, in order (joined, they give ``text`` back)."""
    return _TOKENS.findall(text or "")


def diff_ops(a: str, b: str) -> list[tuple[str, str, str]]:
    """(tag, a_part, b_part) in order; tag is difflib's 'equal', 'replace', 'delete' or 'insert'."""
    ta, tb = tokens(a), tokens(b)
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    return [(tag, "".join(ta[i1:i2]), "".join(tb[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes()]


def similarity(a: str, b: str) -> float:
    """0..1: how much of the two answers is the same, by words."""
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def _esc(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def diff_html(a: str, b: str, removed_bg: str, added_bg: str) -> tuple[str, str]:
    """Two HTML fragments: ``a`` with what ``b`` lacks on ``removed_bg``, ``b`` with what it adds on ``added_bg``."""
    left, right = [], []
    for tag, pa, pb in diff_ops(a, b):
        if tag == "equal":
            left.append(_esc(pa))
            right.append(_esc(pb))
            continue
        if pa:
            left.append(f'<span style="background:{removed_bg}">{_esc(pa)}</span>')
        if pb:
            right.append(f'<span style="background:{added_bg}">{_esc(pb)}</span>')
    return "".join(left), "".join(right)
