"""Filtered splits: the papers' per-pair rules, then document images, duplicates and
benchmark images removed across every source."""
