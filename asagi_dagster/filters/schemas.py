"""Row schemas of the filtering assets. Bump a version when its schema changes."""

import pyarrow as pa

# A pair that passed the per-pair rules, with the image facts the later global steps
# (dedup, decontamination, document filter) need. The bytes stay in the source asset,
# joined by pair_id.
SCREENED_PAIRS_VERSION = 1
SCREENED_PAIRS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("source", pa.string()),  # web | the open dataset's name
        ("shard", pa.string()),  # the source partition: WARC shard or dataset name
        ("origin_id", pa.string()),  # what the image came with: the web page, the dataset record
        ("image_url", pa.string()),
        ("caption", pa.string()),
        ("caption_field", pa.string()),  # alt | figcaption | title | the dataset's text column
        ("vg_image_id", pa.int64()),  # datasets built on Visual Genome: its image id (decontamination)
        ("image_sha256", pa.string()),
        ("image_phash", pa.int64()),  # 64-bit DCT hash, signed
        ("image_format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_mode", pa.string()),  # as stored; pixels are always read as 8-bit RGB
        ("animated", pa.bool_()),
        ("colour_spread", pa.float32()),
    ]
)

# The same rows, after benchmark decontamination and cross-source deduplication.
FILTERED_PAIRS_VERSION = 1
FILTERED_PAIRS = SCREENED_PAIRS
