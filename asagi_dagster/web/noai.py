"""The "noai" / "noimageai" opt-out, as sites state it in X-Robots-Tag headers and in
``<meta name="robots">``: content from such a source is not used for training."""

import re

_NOAI_TOKENS = frozenset({"noai", "noimageai"})
# Directives are separated by commas in the standard form, but pages also write them
# with spaces or semicolons ("noindex noai"); an agent prefix ("googlebot: noai") ends
# at its colon. Any agent's noai counts: an opt-out for one crawler is honoured here.
_SEPARATORS = re.compile(r"[\s,;:]+")


def has_noai(directives: str | None) -> bool:
    """True when robots directives forbid AI use (``noai``, ``noimageai``, maybe per agent)."""
    if not directives:
        return False
    lowered = directives.lower()
    if "noai" not in lowered and "noimageai" not in lowered:  # most pages: no split at all
        return False
    return not _NOAI_TOKENS.isdisjoint(_SEPARATORS.split(lowered))
