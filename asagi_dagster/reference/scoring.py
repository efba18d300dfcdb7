"""Sentences scored against their image with a CLIP-style model; the page's best
sentence (or the pair's own caption, usually its alt text, if that scores higher)
becomes the pair's reference text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asagi_dagster.core import Rejected
from asagi_dagster.filters.images import small_image
from asagi_dagster.filters.settings import ImageSafetySettings
from asagi_dagster.models.clip import DualEncoder
from asagi_dagster.models.settings import ModelRef
from asagi_dagster.models.tiny import BUILTIN_TINY_CLIP, builtin_folder
from asagi_dagster.reference.extract import extraction_config, page_sentences
from asagi_dagster.reference.settings import ReferenceTextSettings
from asagi_dagster.settings import ConfigError
from asagi_dagster.storage import StageWriter, Storage


def load_scorer(settings: ReferenceTextSettings, models: dict[str, ModelRef]) -> DualEncoder:
    model = models.get(settings.scorer_role)
    if model is None:
        raise ConfigError(f"models.{settings.scorer_role} is not set: reference_texts needs a CLIP-style model (or {BUILTIN_TINY_CLIP})")
    if model.id.startswith("builtin:"):
        model = ModelRef(id=str(builtin_folder(model.id, (BUILTIN_TINY_CLIP,))))
    return DualEncoder(model, allow_hub=settings.allow_hub, trust_remote_code=settings.trust_remote_code)


def write_reference_texts(
    storage: Storage,
    pairs_url: str,
    documents_url: str,
    images_url: str,
    out: StageWriter,
    settings: ReferenceTextSettings,
    scorer: DualEncoder,
    safety: ImageSafetySettings,
) -> None:
    """Rows in: the shard's filtered pairs. Each page is extracted and its sentences
    embedded once, however many of its images were kept; each image is decoded once."""
    pairs = {row["pair_id"]: row for row in storage.iter_rows(storage.strip_protocol(pairs_url), ["pair_id", "origin_id", "caption"])}
    wanted_docs = {row["origin_id"] for row in pairs.values()}
    config = extraction_config(settings)
    pages: dict[str, _Page] = {}
    for doc in storage.iter_rows(storage.strip_protocol(documents_url), ["record_id", "url", "html"], batch_rows=64):
        if doc["record_id"] in wanted_docs:
            pages[doc["record_id"]] = _Page(page_sentences(doc["html"], doc["url"], settings, config))
    for batch in storage.iter_batches(storage.strip_protocol(images_url), ["pair_id", "bytes"], batch_rows=64):
        for image in batch.to_pylist():
            pair = pairs.pop(image["pair_id"], None)
            if pair is None:
                continue  # a pair the filters removed
            out.count_in()
            try:
                page = pages.get(pair["origin_id"]) or _Page([])
                out.write(_reference_row(pair, page, image["bytes"], out.partition, settings, scorer, safety))
            except Rejected as rejected:
                out.reject(pair["pair_id"], rejected.reason, rejected.detail)
    for pair_id in pairs:  # kept by the filters but gone from the image file: say so
        out.count_in()
        out.reject(pair_id, "image_missing", "not in the shard's pair_images file")


@dataclass
class _Page:
    sentences: list[str]
    features: np.ndarray | None = None  # the sentences' embeddings, made on first use

    def sentence_features(self, scorer: DualEncoder) -> np.ndarray:
        if self.features is None:
            self.features = scorer.text_features(self.sentences)
        return self.features


def _reference_row(pair: dict, page: _Page, data: bytes, shard: str, settings: ReferenceTextSettings, scorer: DualEncoder, safety: ImageSafetySettings) -> dict:
    sentences = page.sentences
    if not sentences:
        raise Rejected("no_usable_sentence", f"the page's main text has no sentence of {settings.min_sentence_chars}-{settings.max_sentence_chars} characters")
    image = scorer.image_features([small_image(data, scorer.input_side, safety)])[0]
    scores = page.sentence_features(scorer) @ image
    caption_score = float(scorer.text_features([pair["caption"]])[0] @ image)
    order = sorted(range(len(sentences)), key=lambda i: -scores[i])
    best = order[0]
    use_caption = caption_score > scores[best]
    return {
        "pair_id": pair["pair_id"],
        "doc_id": pair["origin_id"],
        "shard": shard,
        "reference_text": pair["caption"] if use_caption else sentences[best],
        "reference_source": "caption" if use_caption else "sentence",
        "score": max(caption_score, float(scores[best])),
        "caption_score": caption_score,
        "runner_up_scores": [float(scores[i]) for i in order[1 : 1 + settings.runner_ups]],
        "sentences": len(sentences),
        "scorer": scorer.name,
    }
