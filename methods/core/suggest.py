"""The closest known names to a misspelt one, for one-line errors (torch-free, so that config
checks can use it before anything loads)."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean a or b?)' naming up to three close options, or '' when none is close."""
    near = difflib.get_close_matches(word, sorted(options), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(near)}?)" if near else ""
