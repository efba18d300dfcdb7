"""Reference texts: for each web pair, the sentence of its page that best describes the
image (trafilatura for the page's main text, a CLIP-style model to score sentences)."""
