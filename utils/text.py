"""Ego4D narration text: the ``#C`` / ``#O`` / ``#unsure`` tags, substituted by words or stripped.

Only the tags are touched (case-insensitively, as whole tokens); every other character, capital letters
included, is kept: ``"#C C picks the Orange"`` → ``"Camera wearer C picks the Orange"`` (substitute) or
``"C picks the Orange"`` (strip).
"""
from __future__ import annotations

import re
from typing import Literal

TAG_WORDS = {"c": "Camera wearer", "o": "Other person", "unsure": "something"}
_TAG = re.compile(r"#(c|o|unsure)\b", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def normalize_narration(text: str, mode: Literal["substitute", "strip"] = "substitute") -> str:
    """``text`` with each tag replaced by its words (``#C`` → "Camera wearer", ``#O`` → "Other person",
    ``#unsure`` → "something") or removed ('strip'); whitespace collapsed and trimmed."""
    if mode == "substitute":
        text = _TAG.sub(lambda match: TAG_WORDS[match.group(1).lower()], text)
    elif mode == "strip":
        text = _TAG.sub(" ", text)
    else:
        raise ValueError(f"normalize_narration: mode must be 'substitute' or 'strip', got {mode!r}")
    return _SPACES.sub(" ", text).strip()
