"""WARC shard -> web_documents + web_images, and web_documents -> pairs + interleaved.

Every record ends as exactly one accepted row or one rejection with a reason:
image-typed responses are accounted under web_images, everything else under
web_documents (including damaged regions of the file, which have no type). A scan of
the raw file counts record starts on its own, so that the check in ``query`` can show
that no record vanished before it was counted.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pyarrow as pa

from asagi_dagster.storage import StageWriter, Storage
from asagi_dagster.web.charset import UndecodableError, decode_html
from asagi_dagster.web.html import HtmlParseError, ImageRef, parse_page
from asagi_dagster.web.noai import has_noai
from asagi_dagster.web.settings import HtmlSettings, WebSourceSettings
from asagi_dagster.web.warc import CorruptRegion, ReadingNotes, WarcRecord, iter_warc
from asagi_dagster.web.warc_starts import scan_record_starts

HTML_TYPES = ("text/html", "application/xhtml+xml")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Ingest allocates millions of short-lived, acyclic objects; the cyclic collector
    would only rescan them (about 5% of the time). Restored however the block ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def ingest_warc(
    open_file: Callable[[], BinaryIO],
    shard: str,
    documents: StageWriter,
    images: StageWriter,
    settings: WebSourceSettings,
) -> None:
    """Read the shard into ``documents`` and ``images``; the record starts an independent
    scan saw, and those inside rejected spans, go into the documents' manifest source
    (``record_starts_check`` compares them with the rows in the files)."""
    max_bytes = max(settings.max_html_bytes, settings.max_image_bytes)
    try:
        starts = scan_record_starts(open_file)  # the first open: nothing is written before it
    except FileNotFoundError:  # deleted after the step saw it in the inbox
        reject_missing_file(shard, documents, images)
        return
    spans: list[CorruptRegion] = []
    notes = ReadingNotes()
    with _gc_paused():
        _ingest_records(iter_warc(open_file, shard, max_bytes, starts, notes), shard, documents, images, settings, spans)
    documents.source = {
        **documents.source,
        "warc_layout": starts.layout,
        "record_starts": str(starts.count),
        "record_starts_in_rejected_spans": str(sum(starts.within(span.offset, span.end) for span in spans)),
        "record_starts_inside_records": str(notes.embedded_starts),
        "records_sharing_a_start": str(notes.shared_starts),
    }


def reject_missing_file(shard: str, documents: StageWriter, images: StageWriter) -> None:
    """A shard file gone from the inbox since it was registered (deleted or moved): one
    rejection, as for an empty file, so the other files of its batch are still ingested
    (a step that failed on it would fail on every retry). Its fingerprint is recorded as
    empty, so the re-sync ingests it again if it comes back."""
    documents.count_in()
    documents.reject(f"{shard}@0", "missing_warc_file", "the file is no longer in the inbox (deleted or moved since it was registered)")
    missing = {"fingerprint": "", "warc_layout": "missing", "record_starts": "0", "record_starts_in_rejected_spans": "0"}
    documents.source = {**documents.source, **missing}
    images.source = {**images.source, "fingerprint": ""}


def _ingest_records(items, shard: str, documents: StageWriter, images: StageWriter, settings: WebSourceSettings, spans: list[CorruptRegion]) -> None:
    # 64-bit hashes, not the strings, keep memory small on big shards; a false duplicate
    # needs a hash collision (odds about n^2 / 2^65, ~1e-8 for a million records).
    seen: set[int] = set()
    any_bytes = False
    for item in items:
        any_bytes = True
        if isinstance(item, CorruptRegion):
            spans.append(item)
            documents.count_in()
            documents.reject(f"{shard}@{item.offset}", "corrupt_warc", f"bytes {item.offset}-{item.end}: {item.error}")
            continue
        kind = media_type(item.content_type)
        is_image = kind.startswith("image/")
        writer = images if is_image else documents
        writer.count_in()
        reason = _rejection(item, settings, kind, is_image)
        if reason is None:
            keys = (hash(item.record_id), hash((item.target_uri, item.payload_digest)))
            if keys[0] in seen or keys[1] in seen:
                reason = ("duplicate_record", f"{item.target_uri} seen earlier in the shard")
            seen.update(keys)
        if reason is not None:
            writer.reject(item.record_id, *reason)
        elif is_image:
            _write_image(item, shard, images)
        else:
            _write_document(item, shard, documents)
    if not any_bytes:
        documents.count_in()
        documents.reject(f"{shard}@0", "empty_warc_file", "the shard has no bytes")


def _rejection(rec: WarcRecord, settings: WebSourceSettings, kind: str, is_image: bool) -> tuple[str, str | None] | None:
    if rec.problem:
        return rec.problem
    if rec.warc_type != "response":
        return "non_response_record", rec.warc_type or "missing WARC-Type"
    if not rec.http_protocol or not rec.http_protocol.upper().startswith("HTTP/") or not _is_status(rec.http_status):
        return "broken_http_headers", f"status line {rec.http_protocol!r} {rec.http_status!r}"
    if rec.http_status != "200":
        return "http_status", rec.http_status
    if rec.warc_truncated:
        return "truncated_record", f"WARC-Truncated: {rec.warc_truncated}"
    if rec.payload is None:
        return ("payload_too_large" if rec.oversize else "unreadable_payload"), rec.payload_error
    if rec.payload_error:
        return "truncated_record", rec.payload_error
    if rec.digest_mismatch:
        return "payload_digest_mismatch", f"the payload does not have its WARC-Payload-Digest {rec.digest_mismatch}"
    if not rec.payload:
        return "empty_payload", None
    limit = settings.max_image_bytes if is_image else settings.max_html_bytes
    if len(rec.payload) > limit:
        return "payload_too_large", f"{len(rec.payload)} > {limit} bytes"
    if not is_image and kind not in HTML_TYPES:
        return "unsupported_content_type", kind or "missing Content-Type"
    return None


def _is_status(value: str | None) -> bool:
    return value is not None and len(value) == 3 and value.isdigit()


def _write_image(rec: WarcRecord, shard: str, images: StageWriter) -> None:
    assert rec.payload is not None  # _rejection refused a record without one
    images.write(
        {
            "record_id": rec.record_id,
            "shard": shard,
            "offset": rec.offset,
            "url": rec.target_uri,
            "fetch_time": rec.warc_date,
            "content_type": media_type(rec.content_type),
            "x_robots_tag": rec.x_robots_tag,
            "payload_digest": rec.payload_digest,
            "size": len(rec.payload),
            "bytes": rec.payload,
        },
        size_hint=len(rec.payload),
    )


def _write_document(rec: WarcRecord, shard: str, documents: StageWriter) -> None:
    assert rec.payload is not None and rec.http_status is not None  # _rejection refused a record without them
    try:
        decoded = decode_html(rec.payload, rec.content_type)
    except UndecodableError as exc:
        documents.reject(rec.record_id, "undecodable_html", str(exc))
        return
    documents.write(
        {
            "record_id": rec.record_id,
            "shard": shard,
            "offset": rec.offset,
            "url": rec.target_uri,
            "fetch_time": rec.warc_date,
            "http_status": int(rec.http_status),
            "content_type": rec.content_type,
            "charset": decoded.charset,
            "charset_source": decoded.source,
            "x_robots_tag": rec.x_robots_tag,
            "payload_digest": rec.payload_digest,
            "html": decoded.text,
        },
        size_hint=len(rec.payload),
    )


def extract_pages(
    storage: Storage,
    documents_url: str,
    pairs: StageWriter,
    interleaved: StageWriter,
    settings: HtmlSettings,
) -> None:
    """Parse each document once; its images become pairs, its sequence an interleaved doc.

    Accounting: pairs count image elements (plus pages that fail to parse); interleaved
    documents count pages.
    """
    columns = ["record_id", "shard", "url", "x_robots_tag", "html"]
    with _gc_paused():
        for batch in storage.iter_batches(storage.strip_protocol(documents_url), columns, batch_rows=64):
            # html as its UTF-8 bytes (a zero-copy cast): parse_page wants bytes anyway.
            htmls = batch.column("html").cast(pa.large_binary()).to_pylist()
            for doc, html in zip(batch.drop_columns(["html"]).to_pylist(), htmls):
                doc["html"] = html
                _extract_page(doc, pairs, interleaved, settings)


def _extract_page(doc: dict, pairs: StageWriter, interleaved: StageWriter, settings: HtmlSettings) -> None:
    doc_id = doc["record_id"]
    interleaved.count_in()
    try:
        page = parse_page(doc["html"], doc["url"], settings.max_context_chars)
    except HtmlParseError as exc:
        pairs.count_in()
        pairs.reject(doc_id, "html_parse_error", str(exc))
        interleaved.reject(doc_id, "html_parse_error", str(exc))
        return
    if has_noai(doc["x_robots_tag"]) or has_noai(page.robots):
        # The site opted out of AI use for this page: none of its content is kept.
        # page.robots joins every robots meta tag, per-agent ones (name=googlebot) as "agent: ..."
        detail = doc["x_robots_tag"] if has_noai(doc["x_robots_tag"]) else f"<meta> robots directives {page.robots!r}"
        for image in page.images:
            pairs.count_in()
            pairs.reject(f"{doc_id}#img{image.index}", "page_noai", detail)
        interleaved.reject(doc_id, "page_noai", detail)
        return
    kept = _write_pairs(doc, page, pairs, settings)
    _write_interleaved(doc, page, kept, interleaved)


def _write_pairs(doc: dict, page, pairs: StageWriter, settings: HtmlSettings) -> dict[int, str]:
    """Write the page's usable images as pairs; returns image index -> pair_id."""
    kept: dict[int, str] = {}
    for image in page.images:
        pairs.count_in()
        pair_id = f"{doc['record_id']}#img{image.index}"
        reason = _image_rejection(image, settings)
        if reason:
            pairs.reject(pair_id, *reason)
            continue
        kept[image.index] = pair_id
        pairs.write(
            {
                "pair_id": pair_id,
                "doc_id": doc["record_id"],
                "shard": doc["shard"],
                "page_url": doc["url"],
                "page_title": page.title,
                "image_index": image.index,
                "image_url": image.url,
                "alt": image.alt,
                "title": image.title,
                "figcaption": image.figcaption,
                "text_before": image.text_before,
                "text_after": image.text_after,
            }
        )
    return kept


def _image_rejection(image: ImageRef, settings: HtmlSettings) -> tuple[str, str | None] | None:
    if image.index >= settings.max_images_per_page:
        return "too_many_images_on_page", f"only the first {settings.max_images_per_page} are kept"
    if image.problem:
        return image.problem, image.problem_detail
    if image.alt and len(image.alt) > settings.max_alt_chars:
        return "alt_too_long", f"{len(image.alt)} characters > {settings.max_alt_chars}"
    return None


def _write_interleaved(doc: dict, page, kept: dict[int, str], interleaved: StageWriter) -> None:
    if not kept:
        interleaved.reject(doc["record_id"], "no_images", f"{len(page.images)} image elements, none usable")
        return
    images = [{"pair_id": kept[image.index], "image_url": image.url, "before_text_block": image.text_block} for image in page.images if image.index in kept]
    interleaved.write(
        {
            "doc_id": doc["record_id"],
            "shard": doc["shard"],
            "page_url": doc["url"],
            "page_title": page.title,
            "text_blocks": page.text_blocks,
            "images": images,
        }
    )
