"""A model's answers to one benchmark: greedy, ``max_new_tokens`` (256, eval-mm's
default), the question in the model's own chat template with the image, plus the
benchmark's configured instruction.

Generation goes through the synthesis backends (transformers locally, vLLM in a GPU
pod), so the prompt a model sees here is built exactly as for synthesis. Besides the
Parquet rows, the answers are written as eval-mm's ``prediction.jsonl`` (``question_id``,
``text``), so a score can be cross-checked with eval-mm itself.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable

import pyarrow as pa
from PIL import Image
from pydantic import BaseModel

from asagi_dagster.core import batches
from asagi_dagster.engines import EngineSettings, GenerationSettings, Request, SamplingSettings, open_generator, user_message
from asagi_dagster.progress import Progress
from asagi_dagster.storage import Manifest, StageWriter, Storage, StorageSettings

VERSION = 1
PREDICTIONS = pa.schema(
    [
        ("question_id", pa.string()),
        ("text", pa.string()),
        ("tokens", pa.int32()),  # generated tokens: max_new_tokens means the answer was cut off
        ("prompt", pa.string()),  # the instruction as the model got it (before its template)
        ("model", pa.string()),
        ("benchmark", pa.string()),
    ]
)
PREDICTION_FILE = "prediction.jsonl"
CHUNK = 32  # items per generate call: vLLM batches them, and progress is logged per chunk


class PredictionJob(BaseModel):
    """Everything the prediction program needs (it runs in a pod without the profile file)."""

    storage: StorageSettings
    asset: str
    partition: str
    benchmark: str
    model: str  # the partition's model name
    model_url: str  # a model folder on the storage root, or a hub id / local folder / builtin
    on_storage: bool  # model_url is on the storage root (this project's trained models)
    revision: str | None = None
    items_url: str
    items: int | None = None  # how many (for progress lines)
    instruction: str | None = None
    engine: EngineSettings
    max_new_tokens: int = 256


def question_text(question: str, instruction: str | None) -> str:
    return f"{question}\n{instruction}" if instruction else question


def greedy(max_new_tokens: int) -> SamplingSettings:
    return SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, repetition_penalty=1.0)


def predict(job: PredictionJob, log: Callable[[str], None] = print) -> Manifest:
    storage = Storage(job.storage)
    model = storage.local_folder(job.model_url) if job.on_storage else job.model_url
    settings = GenerationSettings(**job.engine.model_dump(), model=model, revision=job.revision, modality="image")
    generator = open_generator(settings)
    log(f"{job.partition}: generating with backend {settings.backend} from {job.model_url}")
    sampling = greedy(job.max_new_tokens)
    predictions = []
    progress = Progress(log, job.partition, job.items, "items")
    try:
        with StageWriter(storage, job.asset, job.partition, PREDICTIONS, VERSION) as out:
            out.source = {"model_url": job.model_url}  # the scores name the model that answered
            for chunk in batches(storage.iter_rows(storage.strip_protocol(job.items_url)), CHUNK):
                out.count_in(len(chunk))
                requests, kept = _requests(chunk, out, job.instruction, settings.prompt_image_placeholder, sampling)
                for (question_id, prompt), generated in zip(kept, generator.generate(requests) if requests else []):
                    if generated.text is None:
                        out.reject(question_id, "generation_error", generated.error)
                        continue
                    out.write(
                        {
                            "question_id": question_id,
                            "text": generated.text,
                            "tokens": generated.tokens,
                            "prompt": prompt,
                            "model": job.model,
                            "benchmark": job.benchmark,
                        }
                    )
                    predictions.append({"question_id": question_id, "text": generated.text})
                progress.add(len(chunk))
    finally:
        generator.close()
        if job.on_storage and not storage.is_local:  # the copy local_folder downloaded
            shutil.rmtree(model, ignore_errors=True)
    storage.write_bytes(prediction_file(storage, out.manifest), "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions).encode())
    return out.manifest


def _requests(
    chunk: list[dict], out: StageWriter, instruction: str | None, placeholder: str | None, sampling: SamplingSettings
) -> tuple[list[Request], list[tuple[str, str]]]:
    """One generation request per item, and (question id, prompt) beside each; an image
    that does not decode is rejected here."""
    requests, kept = [], []
    for item in chunk:
        try:
            image = Image.open(io.BytesIO(item["bytes"])).convert("RGB")
        except Exception as exc:  # benchmark_items checked it; a changed decoder may not agree
            out.reject(item["question_id"], "image_unreadable", f"{type(exc).__name__}: {exc}")
            continue
        prompt = question_text(item["question"], instruction)
        message = user_message(prompt, image=True, image_placeholder=placeholder)
        requests.append(Request(messages=[message], sampling=sampling, seed=0, image=image))
        kept.append((item["question_id"], prompt))
    return requests, kept


def prediction_file(storage: Storage, manifest: Manifest) -> str:
    """eval-mm's prediction.jsonl, beside the partition's Parquet file."""
    return f"{storage.asset_dir(manifest.asset, manifest.partition)}/{PREDICTION_FILE}"
