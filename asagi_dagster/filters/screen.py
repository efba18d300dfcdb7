"""One web shard's pairs through the per-pair rules: pair_images + image_text_pairs ->
screened_pairs (kept pairs with image facts) and rejections with the failing rule."""

from __future__ import annotations

import hashlib

from asagi_dagster.core import Rejected
from asagi_dagster.filters.rules import KeptPair, PairScreen, pick_caption
from asagi_dagster.filters.settings import FilterSettings
from asagi_dagster.storage import StageWriter, Storage

_TEXT_COLUMNS = ["pair_id", "doc_id", "alt", "figcaption", "title"]


def screen_web_pairs(storage: Storage, pairs_url: str, images_url: str, out: StageWriter, settings: FilterSettings) -> None:
    """Rows in: one per pair image. Sets ``out.rule_stats``."""
    # Texts are small; the images are streamed past them batch by batch.
    texts = {row["pair_id"]: row for row in storage.iter_rows(storage.strip_protocol(pairs_url), _TEXT_COLUMNS)}
    screen = PairScreen(settings)
    columns = ["pair_id", "image_url", "sha256", "bytes"]
    for batch in storage.iter_batches(storage.strip_protocol(images_url), columns, batch_rows=64):
        for image in batch.to_pylist():
            out.count_in()
            pair = texts.get(image["pair_id"])
            if pair is None:
                out.reject(image["pair_id"], "pair_text_missing", "image_text_pairs has no row for this image")
                continue
            try:
                field, caption = pick_caption(pair, settings.caption_fields)
                kept = screen.check(caption, image["bytes"])
            except Rejected as rejected:
                out.reject(image["pair_id"], rejected.reason, rejected.detail)
                continue
            out.write(screened_row(image, pair["doc_id"], "web", out.partition, field, caption, kept))
    out.rule_stats = screen.stats.as_rows()


def screened_row(image: dict, origin_id: str, source: str, shard: str, field: str, caption: str, kept: KeptPair) -> dict:
    header = kept.header
    return {
        "pair_id": image["pair_id"],
        "source": source,
        "shard": shard,
        "origin_id": origin_id,
        "image_url": image.get("image_url"),
        "caption": caption,
        "caption_field": field,
        "vg_image_id": image.get("vg_image_id"),
        "image_sha256": image.get("sha256") or hashlib.sha256(image["bytes"]).hexdigest(),
        "image_phash": kept.phash,
        "image_format": header.format,
        "width": header.width,
        "height": header.height,
        "image_mode": header.mode,
        "animated": header.animated,
        "colour_spread": kept.colour_spread,
    }


def screen_dataset_pairs(storage: Storage, pairs_url: str, out: StageWriter, settings: FilterSettings, rule_overrides: dict[str, dict]) -> None:
    """A dataset's pairs through the same rules (with the dataset's overrides, e.g.
    ASCII-only off for an English dataset). Rows in: one per dataset pair."""
    screen = PairScreen(settings.with_rule_overrides(rule_overrides))
    columns = ["pair_id", "origin_id", "text", "question", "answer", "vg_image_id", "bytes"]
    for batch in storage.iter_batches(storage.strip_protocol(pairs_url), columns, batch_rows=64):
        for pair in batch.to_pylist():
            out.count_in()
            field, caption = ("text", pair["text"]) if pair["text"] else ("question+answer", f"{pair['question']} {pair['answer']}")
            try:
                kept = screen.check(caption, pair["bytes"])
            except Rejected as rejected:
                out.reject(pair["pair_id"], rejected.reason, rejected.detail)
                continue
            out.write(screened_row(pair, pair["origin_id"], out.partition, out.partition, field, caption, kept))
    out.rule_stats = screen.stats.as_rows()
