"""Checks of text data: texts one word apart (near-duplicates a sentence embedding can miss),
empty, very short and over-long texts."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .copies import normalised_text
from .findings import Finding

__all__ = ["MIN_CHARACTERS", "MIN_WORDS_APART", "one_word_apart", "text_findings"]

MIN_WORDS_APART = 3  # the shorter text of a one-word-apart pair has at least this many words
MIN_CHARACTERS = 3   # fewer letters or digits than this: a short text
Pair = tuple[int, int, float]


def one_word_apart(texts: Sequence[str]) -> list[Pair]:
    """Pairs of texts whose words (case and punctuation ignored) are the same but for one word
    added or dropped, the shorter holding at least ``MIN_WORDS_APART`` words. Found through every
    text's one-word deletions, in time linear in the words."""
    words = [normalised_text(text).split() for text in texts]
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
                  parts: Sequence[str | None], skipped: Sequence[object], tokenizer=None,
                  max_length: int | None = None) -> list[Finding]:
    """Empty texts (the reader skipped them), texts with fewer than ``MIN_CHARACTERS`` letters or
    digits, and texts longer than ``max_length`` tokens of ``tokenizer`` (the backbone's limit)."""
    findings = [Finding("empty-text", None, issue.location, 1.0, detail="empty text, skipped when the data was read")
                for issue in skipped if getattr(issue, "problem", "") == "empty text"]
    for i, text in enumerate(texts):
        characters = len(re.findall(r"\w", text))
        if characters < MIN_CHARACTERS:
            findings.append(Finding("short-text", i, locations[i], 1.0 - characters / MIN_CHARACTERS,
                                    label=labels[i] if labels else None, split=parts[i], text=text,
                                    detail=f"{characters} letter(s) or digit(s)"))
    if tokenizer is not None and max_length:
        lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False,
                                                 verbose=False)["input_ids"]]
        for i, length in enumerate(lengths):
            if length > max_length:
                findings.append(Finding("long-text", i, locations[i], 1.0 - max_length / length,
                                        label=labels[i] if labels else None, split=parts[i], text=texts[i],
                                        detail=f"{length} tokens; the backbone reads the first {max_length}"))
    return findings
