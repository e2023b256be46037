"""Checks of text data: texts one word apart (near-duplicates a sentence embedding can miss),
empty, very short and over-long texts."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from .copies import text_words
from .findings import Finding

__all__ = ["ADDED_TOKENS", "MIN_CHARACTERS", "MIN_WORDS_APART", "may_exceed", "one_word_apart", "text_findings"]

MIN_WORDS_APART = 3  # the shorter text of a one-word-apart pair has at least this many words
MIN_CHARACTERS = 3   # fewer letters or digits than this: a short text
ADDED_TOKENS = 8  # room for the special tokens a tokenizer adds (2 for BERT and RoBERTa) and a word-start marker
Pair = tuple[int, int, float]


def one_word_apart(texts: Sequence[str]) -> list[Pair]:
    """Pairs of texts whose words (case and punctuation ignored) are the same but for one word
    added or dropped, the shorter holding at least ``MIN_WORDS_APART`` words. Found through every
    text's one-word deletions, in time linear in the words."""
    words = [text_words(text) for text in texts]
    whole: dict[tuple[str, ...], list[int]] = {}
    for i, w in enumerate(words):
        if len(w) >= MIN_WORDS_APART:
            whole.setdefault(tuple(w), []).append(i)
    pairs = set()
    for i, w in enumerate(words):
        if len(w) <= MIN_WORDS_APART:
            continue
        for drop in range(len(w)):
            for j in whole.get(tuple(w[:drop] + w[drop + 1:]), ()):
                pairs.add((min(i, j), max(i, j)))
    return [(i, j, min(len(words[i]), len(words[j])) / max(len(words[i]), len(words[j]))) for i, j in sorted(pairs)]


def text_findings(texts: Sequence[str], locations: Sequence[str], labels: Sequence[str] | None,
                  parts: Sequence[str | None], skipped: Sequence[object], tokenizer: Callable[[], Any] | None = None,
                  max_length: int | None = None) -> list[Finding]:
    """Empty texts (the reader skipped them), texts with fewer than ``MIN_CHARACTERS`` letters or
    digits, and texts longer than ``max_length`` tokens of the backbone's tokenizer (``tokenizer()``
    gives it; asked only when some text may be that long, see :func:`may_exceed`)."""
    findings = [Finding("empty-text", None, issue.location, 1.0, detail="empty text, skipped when the data was read")
                for issue in skipped if getattr(issue, "problem", "") == "empty text"]
    for i, text in enumerate(texts):
        characters = len(re.findall(r"\w", text))
        if characters < MIN_CHARACTERS:
            findings.append(Finding("short-text", i, locations[i], 1.0 - characters / MIN_CHARACTERS,
                                    label=labels[i] if labels else None, split=parts[i], text=text,
                                    detail=f"{characters} letter(s) or digit(s)"))
    candidates = [i for i, text in enumerate(texts) if may_exceed(text, max_length)] if max_length else []
    if tokenizer is not None and candidates:
        encoded = tokenizer()([texts[i] for i in candidates], add_special_tokens=True, truncation=False, verbose=False)
        for i, ids in zip(candidates, encoded["input_ids"]):
            if len(ids) > max_length:
                findings.append(Finding("long-text", i, locations[i], 1.0 - max_length / len(ids),
                                        label=labels[i] if labels else None, split=parts[i], text=texts[i],
                                        detail=f"{len(ids)} tokens; the backbone reads the first {max_length}"))
    return findings


def may_exceed(text: str, max_length: int) -> bool:
    """Whether ``text`` can be more than ``max_length`` tokens long. A WordPiece, byte-level BPE or
    SentencePiece token covers at least one byte of the text as the tokenizer normalises it (lower case,
    compatibility decomposition at most: the longest such form), but for the special tokens it adds and a
    word-start marker (``ADDED_TOKENS``); shorter texts need no tokenizer."""
    return len(unicodedata.normalize("NFKD", text.lower()).encode("utf-8")) + ADDED_TOKENS > max_length
