"""Finds a reply that has fallen into a loop: small models decoding greedily repeat a phrase until
the token budget runs out, and the loop then sits in the history and steers the next answer."""

from __future__ import annotations

MIN_REPEATS = 3  # the unit fills the end of the reply at least this many times over
MIN_SPAN = 24  # characters of repetition before it counts (so "......" or "ha ha ha" do not)
LONGEST_UNIT = 120


def repeated_unit(text: str, min_repeats: int = MIN_REPEATS, longest: int = LONGEST_UNIT) -> str | None:
    """The shortest phrase the end of ``text`` keeps repeating (at least ``min_repeats`` times and
    :data:`MIN_SPAN` characters, a last partial repetition allowed), or None when it does not loop."""
    text = text.rstrip()
    for length in range(1, min(longest, len(text) // min_repeats) + 1):
        span = max(length * min_repeats, MIN_SPAN)
        if span > len(text):
            break
        start = len(text) - span
        if all(text[i] == text[i + length] for i in range(start, len(text) - length)):
            while start > 0 and text[start - 1] == text[start - 1 + length]:
                start -= 1  # back to where the loop began, so the phrase reads from its start
            unit = text[start:start + length].strip()
            if unit:
                return unit
    return None
