"""Row schemas of the web-ingest assets. Bump a version when its schema changes."""

import pyarrow as pa

WEB_DOCUMENTS_VERSION = 1
WEB_DOCUMENTS = pa.schema(
    [
        ("record_id", pa.string()),  # WARC-Record-ID
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("url", pa.string()),
        ("fetch_time", pa.string()),  # WARC-Date, ISO 8601
        ("http_status", pa.int32()),
        ("content_type", pa.string()),
        ("charset", pa.string()),  # the codec that decoded the page
        ("charset_source", pa.string()),  # header | bom | meta | detected
        ("x_robots_tag", pa.string()),
        ("payload_digest", pa.string()),  # WARC-Payload-Digest, or sha1 of the payload
        ("html", pa.large_string()),
    ]
)

WEB_IMAGES_VERSION = 1
WEB_IMAGES = pa.schema(
    [
        ("record_id", pa.string()),
        ("shard", pa.string()),
        ("offset", pa.int64()),
        ("url", pa.string()),
        ("fetch_time", pa.string()),
        ("content_type", pa.string()),
        ("x_robots_tag", pa.string()),
        ("payload_digest", pa.string()),  # as in web_documents; pair_images adds the sha256
        ("size", pa.int64()),
        ("bytes", pa.large_binary()),
    ]
)

IMAGE_TEXT_PAIRS_VERSION = 1
IMAGE_TEXT_PAIRS = pa.schema(
    [
        ("pair_id", pa.string()),  # <doc record_id>#img<index>
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("page_url", pa.string()),
        ("page_title", pa.string()),
        ("image_index", pa.int32()),
        ("image_url", pa.string()),
        ("alt", pa.string()),
        ("title", pa.string()),
        ("figcaption", pa.string()),
        ("text_before", pa.string()),
        ("text_after", pa.string()),
    ]
)

# MMC4's layout: the page's text blocks in order, and each image with the index of the
# text block it comes before (len(text_blocks) when it comes last).
INTERLEAVED_IMAGE = pa.struct([("pair_id", pa.string()), ("image_url", pa.string()), ("before_text_block", pa.int32())])
INTERLEAVED_DOCUMENTS_VERSION = 1
INTERLEAVED_DOCUMENTS = pa.schema(
    [
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("page_url", pa.string()),
        ("page_title", pa.string()),
        ("text_blocks", pa.list_(pa.string())),
        ("images", pa.list_(INTERLEAVED_IMAGE)),
    ]
)

PAIR_IMAGES_VERSION = 1
PAIR_IMAGES = pa.schema(
    [
        ("pair_id", pa.string()),
        ("image_url", pa.string()),
        ("origin", pa.string()),  # warc | download
        ("content_type", pa.string()),
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("bytes", pa.large_binary()),
    ]
)
