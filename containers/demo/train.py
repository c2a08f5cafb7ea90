"""Train the demo's trigram model from the bundled corpus and the standard library's docstrings."""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import re
import sys
import sysconfig
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from lm import FORMAT, SENTENCE_END, tokenize

HERE = Path(__file__).resolve().parent
SKIP_DIRS = {"test", "tests", "idlelib", "turtledemo", "lib2to3", "site-packages", "dist-packages", "__pycache__"}
# Paragraphs with these read as code or markup, not prose, and would teach the model line noise.
CODE_MARKS = re.compile(r"[_=(){}\[\]<>`*#@|\\/%$^~]|\w\.\w|::|\.\.\.|^\s|>>>", re.MULTILINE)
MIN_WORDS = 6


def corpus_paragraphs(folder: Path) -> Iterator[str]:
    """Yield the prose paragraphs of every .txt file in folder, in file-name order.

    Lines starting with "#" are comments. Paragraphs are separated by blank lines; short ones
    without sentence punctuation (titles) are skipped.
    """
    for path in sorted(folder.glob("*.txt")):
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
        for block in re.split(r"\n\s*\n", "\n".join(lines)):
            text = " ".join(block.split())
            if text and text[-1] in ".!?\"'" and len(text.split()) >= MIN_WORDS:
                yield text


def stdlib_docstrings(root: Path, max_chars: int) -> Iterator[str]:
    """Yield prose paragraphs from the docstrings of the standard library under root.

    Args:
        root: the stdlib folder (sysconfig's "stdlib" path).
        max_chars: stop once this many characters have been yielded (keeps the build fast).
    """
    budget = max_chars
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(folder, name).read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for paragraph in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                    if CODE_MARKS.search(paragraph):
                        continue
                    text = " ".join(paragraph.split())
                    if text.endswith(".") and len(text.split()) >= MIN_WORDS and text[0].isupper():
                        yield text
                        budget -= len(text)
                        if budget <= 0:
                            return


def count_ngrams(paragraphs: Iterable[str]) -> tuple[Counter, Counter, dict, dict]:
    """Count unigrams, surface casings, bigrams and trigrams over lower-cased tokens.

    Each paragraph is one sequence from "<s> <s>" to "</s>". Every sentence start is also counted
    after "<s> <s>", so that a reply can open with any sentence the model has read, not only
    with the first sentence of a paragraph.

    Returns:
        (unigram counts, casing counts per (word, surface form), bigram[a][b], trigram[(a, b)][c]).
    """
    unigram: Counter = Counter()
    casing: Counter = Counter()
    bigram: dict = defaultdict(Counter)
    trigram: dict = defaultdict(Counter)
    for paragraph in paragraphs:
        surface = tokenize(paragraph)
        words = [t.lower() for t in surface]
        for i, (word, form) in enumerate(zip(words, surface)):
            # Sentence-initial capitals say nothing about how a word is normally written.
            if i > 0 and surface[i - 1] not in SENTENCE_END:
                casing[word, form] += 1
        seq = ["<s>", "<s>", *words, "</s>"]
        unigram.update(seq[2:])
        for i in range(2, len(seq)):
            bigram[seq[i - 1]][seq[i]] += 1
            trigram[seq[i - 2], seq[i - 1]][seq[i]] += 1
            if seq[i - 1] in SENTENCE_END and i + 1 < len(seq) and seq[i] != "</s>":
                trigram["<s>", "<s>"][seq[i]] += 1
                bigram["<s>"][seq[i]] += 1
                if i + 2 < len(seq):
                    trigram["<s>", seq[i]][seq[i + 1]] += 1
    return unigram, casing, bigram, trigram


def build_model(paragraphs: Iterable[str], min_trigram: int = 1) -> dict:
    """Turn paragraphs into the JSON document that lm.NGramModel loads.

    Args:
        paragraphs: training text.
        min_trigram: trigram continuations seen fewer times than this are dropped (size control).

    Returns:
        The model document: vocabulary by falling frequency, unigram counts, and bigram and trigram
        tables as flat [id, count, id, count, ...] lists.
    """
    unigram, casing, bigram, trigram = count_ngrams(paragraphs)
    words = sorted((w for w in unigram if w not in ("<s>", "</s>")), key=lambda w: (-unigram[w], w))
    order = ["<s>", "</s>", *words]
    ids = {w: i for i, w in enumerate(order)}
    forms: dict[str, tuple[int, str]] = {}
    for (word, form), n in casing.items():
        if (n, form) > forms.get(word, (0, "")):
            forms[word] = (n, form)
    vocab = [forms[w][1] if w in forms else w for w in order]

    def flat(counter: Counter, floor: int) -> list[int]:
        pairs = sorted(((ids[w], n) for w, n in counter.items() if n >= floor), key=lambda p: (-p[1], p[0]))
        return [x for pair in pairs for x in pair]

    bigram_rows = [[ids[a], flat(c, 1)] for a, c in sorted(bigram.items(), key=lambda kv: ids[kv[0]])]
    trigram_rows = []
    for (a, b), counter in sorted(trigram.items(), key=lambda kv: (ids[kv[0][0]], ids[kv[0][1]])):
        row = flat(counter, min_trigram)
        if row:
            trigram_rows.append([ids[a], ids[b], row])
    return {
        "format": FORMAT,
        "info": {"tokens": sum(unigram.values()), "vocab": len(vocab), "trigram_contexts": len(trigram_rows)},
        "vocab": vocab,
        "unigram": [unigram[w] for w in order],
        "bigram": bigram_rows,
        "trigram": trigram_rows,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: train and write the model file; prints a one-line summary.

    Returns:
        The process exit status (0).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus", help="folder of .txt files")
    parser.add_argument("--corpus-weight", type=int, default=3, help="times the corpus is counted")
    parser.add_argument("--stdlib-chars", type=int, default=1_500_000, help="docstring text budget; 0 = none")
    parser.add_argument("--min-trigram", type=int, default=1, help="drop rarer trigram continuations")
    parser.add_argument("--out", type=Path, default=HERE / "model.json.gz", help="model file to write")
    args = parser.parse_args(argv)

    started = time.monotonic()
    paragraphs = list(corpus_paragraphs(args.corpus)) * max(args.corpus_weight, 1)
    if args.stdlib_chars > 0:
        paragraphs += stdlib_docstrings(Path(sysconfig.get_paths()["stdlib"]), args.stdlib_chars)
    model = build_model(paragraphs, args.min_trigram)
    data = json.dumps(model, separators=(",", ":")).encode()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the file byte-identical between builds, so Docker layers stay cacheable.
    args.out.write_bytes(gzip.compress(data, mtime=0) if args.out.suffix == ".gz" else data)
    info = model["info"]
    print(
        f"trained on {info['tokens']} tokens: vocab {info['vocab']}, {info['trigram_contexts']} trigram "
        f"contexts -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
