"""Reference texts: for each web pair, the sentence of its page that best describes the
image (trafilatura for the page's main text, a CLIP-style model to score sentences)."""

import pyarrow as pa

REFERENCE_TEXTS_VERSION = 1
REFERENCE_TEXTS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("reference_text", pa.string()),
        ("reference_source", pa.string()),  # sentence | caption (the pair's own alt/figcaption scored higher)
        ("score", pa.float32()),  # cosine similarity of reference_text and the image
        ("caption_score", pa.float32()),
        ("runner_up_scores", pa.list_(pa.float32())),  # the next-best sentences' scores
        ("sentences", pa.int32()),  # candidates from the page's main text
        ("scorer", pa.string()),  # model id (and revision) that scored
    ]
)
