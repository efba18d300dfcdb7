"""The "noai" / "noimageai" opt-out, as sites state it in X-Robots-Tag headers and in
``<meta name="robots">``: content from such a source is not used for training."""

_NOAI_TOKENS = frozenset({"noai", "noimageai"})


def has_noai(directives: str | None) -> bool:
    """True when robots directives forbid AI use (``noai``, ``noimageai``, maybe per agent)."""
    for part in (directives or "").lower().split(","):
        token = part.split(":")[-1].strip()
        if token in _NOAI_TOKENS:
            return True
    return False
