"""A page's main text as Japanese sentences, with trafilatura.

trafilatura falls back to a baseline extractor that flattens the whole page (ruby
readings, menus and all) when its main-text result is under MIN_EXTRACTED_SIZE (250
characters by default); the short pages that carry most web images are exactly those,
so the limit is lowered. With it, ruby base text is kept and readings dropped.
"""

from __future__ import annotations

import re
from configparser import ConfigParser

import trafilatura
from trafilatura.settings import use_config

from asagi_dagster.reference.settings import ReferenceTextSettings

# A sentence ends after Japanese or ASCII terminal punctuation (closing brackets and
# quotes stay with it), at a line break, or at a table cell edge (trafilatura writes
# table rows with "|").
_SENTENCE_END = re.compile(r"(?<=[。！？!?])(?![」』）)\"'])|\n+|\|")


def extraction_config(settings: ReferenceTextSettings) -> ConfigParser:
    config = use_config()
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", str(settings.min_extracted_chars))
    config.set("DEFAULT", "MIN_OUTPUT_SIZE", "1")
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")  # no signal-based timeout: it only works in the main thread
    return config


def main_text(html: str, url: str | None, config: ConfigParser) -> str | None:
    """The page's main text, or None when trafilatura finds none."""
    return trafilatura.extract(html, url=url, config=config, include_comments=False, include_tables=True)


def split_sentences(text: str, settings: ReferenceTextSettings) -> list[str]:
    """Sentences of usable length, whitespace collapsed, in page order."""
    sentences = []
    for piece in _SENTENCE_END.split(text):
        sentence = " ".join(piece.split())
        if settings.min_sentence_chars <= len(sentence) <= settings.max_sentence_chars:
            sentences.append(sentence)
    return sentences


def page_sentences(html: str, url: str | None, settings: ReferenceTextSettings, config: ConfigParser) -> list[str]:
    text = main_text(html, url, config)
    return split_sentences(text, settings) if text else []
