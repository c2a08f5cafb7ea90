"""A word-level trigram language model with Witten-Bell backoff: tokenizer, detokenizer, loading, sampling."""

from __future__ import annotations

import gzip
import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

FORMAT = "modeldeck-ngram/1"
BOS, EOS = 0, 1  # ids of the "<s>" and "</s>" markers; train.py puts them first in the vocabulary
SENTENCE_END = frozenset({".", "!", "?"})
NO_SPACE_BEFORE = frozenset({".", ",", ";", ":", "!", "?"})

# Words keep inner apostrophes and hyphens ("won't", "Shepherd-boy"); quotes and brackets are
# dropped because an n-gram model cannot keep them balanced, and unbalanced quotes read badly.
TOKEN_RE = re.compile(r"[A-Za-z]+(?:['\u2019-][A-Za-z]+)*|\d+(?:\.\d+)?|[.,;:!?]")

# Words too common to say what a message is about; they are never chat keywords.
FUNCTION_WORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just me more most my no nor not
    now of off on once only or other our out over own please same she should so some such than that the
    their them then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours tell say said give make write
    show explain let like know think want need get go use one two""".split()
)
# A chat keyword's weight is multiplied by this while it may still appear.
KEYWORD_BOOST = 12.0
# The unigram tier only ever offers this many candidates, so one step stays cheap.
UNIGRAM_FALLBACK = 300
BIGRAM_CANDIDATES = 60


def tokenize(text: str) -> list[str]:
    """Split text into surface tokens: words, numbers and sentence punctuation.

    Args:
        text: any text.

    Returns:
        The tokens in order, with their original case.
    """
    return TOKEN_RE.findall(text.replace("\u2019", "'"))


def join_piece(token: str, previous: str | None, first: bool) -> str:
    """The text that token adds after previous, with spacing and sentence capitals.

    Args:
        token: the display form of the token.
        previous: the token before it (None or "<s>" at the start of a text).
        first: True when nothing precedes it in the output, so no leading space is due.

    Returns:
        The piece to append: a leading space unless it is punctuation or the first piece,
        capitalised when it starts a sentence.
    """
    if token in NO_SPACE_BEFORE:
        return token
    if previous is None or previous == "<s>" or previous in SENTENCE_END:
        token = token[:1].upper() + token[1:]
    return token if first else " " + token


class NGramModel:
    """A trained trigram model, loaded from the file that train.py writes."""

    def __init__(self, data: dict) -> None:
        """Build the lookup tables from the decoded model file.

        Args:
            data: the decoded JSON document.

        Raises:
            ValueError: the document is not a model of this format.
        """
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} model file (format={data.get('format')!r})")
        self.vocab: list[str] = data["vocab"]
        self.index = {word.lower(): i for i, word in enumerate(self.vocab)}
        self.unigram: list[int] = data["unigram"]
        # Ids are sorted by falling frequency, so the first ids are the commonest words.
        self.fallback = [(i, self.unigram[i]) for i in range(2, min(len(self.vocab), UNIGRAM_FALLBACK + 2))]
        fallback_total = sum(w for _, w in self.fallback) or 1
        self.fallback_probs = {t: w / fallback_total for t, w in self.fallback}
        self.bigram = {row[0]: _pairs(row[1]) for row in data["bigram"]}
        self.trigram = {(row[0], row[1]): _pairs(row[2]) for row in data["trigram"]}
        # Contexts "<s> x" by x: where a sentence can start, to steer replies toward a keyword early.
        self.openers = {b: entry[0] for (a, b), entry in self.trigram.items() if a == BOS and b != BOS}
        self.info = data.get("info", {})

    @classmethod
    def load(cls, path: str | Path) -> NGramModel:
        """Read a model file (gzip-compressed JSON when its name ends in .gz).

        Args:
            path: the file train.py wrote.

        Returns:
            The loaded model.

        Raises:
            OSError: the file cannot be read.
            ValueError: it is not a model file.
        """
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return cls(json.loads(raw))

    def encode(self, tokens: Sequence[str]) -> list[int | None]:
        """Map surface tokens to ids; words the model never saw map to None."""
        return [self.index.get(token.lower()) for token in tokens]

    def keywords(self, text: str) -> list[int]:
        """The content words of text that the model knows, in order of first use, without repeats.

        Args:
            text: typically the last user message of a chat.

        Returns:
            Token ids, excluding punctuation and function words.
        """
        found: list[int] = []
        for token_id in self.encode(tokenize(text)):
            if token_id is None or token_id in found or self.vocab[token_id].lower() in FUNCTION_WORDS:
                continue
            if self.vocab[token_id][:1].isalpha():
                found.append(token_id)
        return found

    def generate(
        self,
        context: Sequence[int | None],
        rng: random.Random,
        temperature: float = 1.0,
        top_p: float = 1.0,
        keywords: Sequence[int] = (),
        ignore_eos: bool = False,
        min_tokens: int = 0,
    ) -> Iterator[int]:
        """Yield token ids one at a time, without end, until the model emits end-of-text.

        Args:
            context: ids of the text so far (None for unknown words); the last two condition the
                first token.
            rng: the random source; a seeded one makes the output repeatable.
            temperature: 0 picks the likeliest token every time; higher flattens the distribution.
            top_p: nucleus sampling: keep the smallest set of likeliest tokens whose probability
                reaches top_p.
            keywords: ids to favour (each at most twice), so replies pick up the user's words.
            ignore_eos: never end the text; generation runs until the caller stops iterating.
            min_tokens: an end-of-text before this many tokens starts a new paragraph instead, so
                replies are not cut off after one short sentence.

        Returns:
            An iterator of token ids; EOS is never yielded, the iterator just ends.
        """
        history: list[int | None] = [BOS, BOS, *context]
        boosts = {k: 2 for k in keywords}
        wanted = set(keywords)
        # Sentence openers that lead straight to a keyword ("The" before "Fox") get the boost too.
        openers = {x for x, nexts in self.openers.items() if wanted.intersection(nexts[:200])}
        seen_trigrams: set[tuple] = set()
        produced = 0
        while True:
            a, b = history[-2], history[-1]
            candidates = self._distribution(a, b)
            if ignore_eos:
                candidates = [(t, w) for t, w in candidates if t != EOS] or self.fallback
            # Refusing to repeat a trigram keeps greedy decoding out of loops like "the man and the man".
            fresh = [(t, w) for t, w in candidates if (a, b, t) not in seen_trigrams]
            candidates = fresh or candidates
            if any(boosts.values()):
                at_start = b == BOS or (b is not None and self.vocab[b] in SENTENCE_END)
                candidates = [
                    (t, w * KEYWORD_BOOST if boosts.get(t) or (at_start and t in openers) else w)
                    for t, w in candidates
                ]
            token = _pick(candidates, rng, temperature, top_p)
            if token == EOS:
                if produced >= min_tokens:
                    return
                seen_trigrams.add((a, b, EOS))
                history += [BOS, BOS]
                continue
            seen_trigrams.add((a, b, token))
            if boosts.get(token):
                boosts[token] -= 1
            history.append(token)
            produced += 1
            yield token

    def _distribution(self, a: int | None, b: int | None) -> list[tuple[int, float]]:
        """Interpolated next-token weights for context (a, b), Witten-Bell style."""
        uni = self.fallback_probs
        bigram = self.bigram.get(b) if b is not None else None
        if bigram:
            ids, counts, total = bigram
            lam = total / (total + len(ids))
            mixed = {t: (1 - lam) * p for t, p in uni.items()}
            for t, c in zip(ids[:BIGRAM_CANDIDATES], counts[:BIGRAM_CANDIDATES]):
                mixed[t] = mixed.get(t, 0.0) + lam * c / total
        else:
            mixed = dict(uni)
        trigram = self.trigram.get((a, b)) if a is not None and b is not None else None
        if trigram:
            ids, counts, total = trigram
            lam = total / (total + len(ids))
            mixed = {t: (1 - lam) * p for t, p in mixed.items()}
            for t, c in zip(ids, counts):
                mixed[t] = mixed.get(t, 0.0) + lam * c / total
        return list(mixed.items())


def _pairs(flat: list[int]) -> tuple[list[int], list[int], int]:
    """Unpack [id, count, id, count, ...] into (ids, counts, total), ids by falling count."""
    ids, counts = flat[0::2], flat[1::2]
    return ids, counts, sum(counts)


def _pick(candidates: list[tuple[int, float]], rng: random.Random, temperature: float, top_p: float) -> int:
    """Choose one token id from (id, weight) pairs by greedy, temperature and nucleus rules."""
    # Sorting by (-weight, id) makes ties, and so greedy output, independent of dict order.
    ranked = sorted(candidates, key=lambda tw: (-tw[1], tw[0]))
    if temperature <= 0:
        return ranked[0][0]
    weights = [math.exp(math.log(max(w, 1e-300)) / temperature) for _, w in ranked]
    total = sum(weights)
    if top_p < 1.0:
        kept, mass = 0, 0.0
        for w in weights:
            kept += 1
            mass += w / total
            if mass >= top_p:
                break
        ranked, weights = ranked[:kept], weights[:kept]
    return rng.choices([t for t, _ in ranked], weights=weights)[0]
