"""One generation interface (synthesis and evaluation both use it), three backends: vLLM
offline (continuous batching), an OpenAI-compatible HTTP endpoint, and transformers
``generate`` (the CPU fallback).

A request is chat messages (an image, if any, as an image content part), sampling
settings and a seed. The local backends render the messages with the model's own chat
template through ``render_prompt``; vLLM gets that same text, plus the image as
multi-modal data, so the text and image paths share every step of request building.
The HTTP backend sends the messages and lets the server apply its template.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

from PIL import Image
from pydantic import Field, model_validator

from asagi_dagster.models.tiny import BUILTIN_TINY_LLAMA, BUILTIN_TINY_LLAVA, builtin_folder
from asagi_dagster.settings import ConfigError, Strict


class EndpointSettings(Strict):
    """An OpenAI-compatible server (``vllm serve`` or a provider). The key, if any, is
    read from the environment variable named here, never from the profile."""

    base_url: str = Field(description="Up to and including /v1, e.g. http://vllm-caption:8000/v1.")
    served_model: str | None = Field(None, description="The model name the server knows; default: the generator's model.")
    api_key_env: str | None = None
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(3, ge=0, description="Retries of a failed request (connection errors, 429 and 5xx).")
    backoff_s: float = Field(1.0, ge=0)


class EngineSettings(Strict):
    """How a model is run for generation: the backend and its knobs (synthesis and evaluation)."""

    backend: Literal["transformers", "vllm", "openai", "scripted"] = Field(
        "transformers", description="scripted: answers from a JSON script (model: its path), for dry runs and tests of what follows generation."
    )
    endpoint: EndpointSettings | None = None
    image_placeholder: str | None = Field(
        None, description="For chat templates that take plain-string content (Phi-3.5-vision: '<|image_1|>'); default: an image content part."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(None, ge=64)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = Field(False, description="vLLM: no CUDA graph capture (faster start; CPU runs need it).")
    enable_chunked_prefill: bool | None = Field(
        None,
        description=(
            "vLLM: None keeps vLLM's default. False on CPU: there a seeded request whose "
            "prompt is split across steps fails ('CPU Generator does not use offset')."
        ),
    )
    trust_remote_code: bool = False
    allow_hub: bool = Field(False, description="Let the model download from the Hugging Face hub (cluster only).")
    batch_size: int = Field(16, ge=1, description="transformers: requests generated together, left-padded (vLLM and servers batch on their own).")

    @property
    def prompt_image_placeholder(self) -> str | None:
        """The placeholder to write into prompts: none over HTTP, where the server's template places the image."""
        return self.image_placeholder if self.backend != "openai" else None


class GenerationSettings(EngineSettings):
    """A model and how an engine runs it (asagi_dagster/engines.py): what synthesis,
    predictions and the judge each generate with."""

    model: str = Field(description="Hub id, local directory, or builtin:tiny-llama-ja / builtin:tiny-llava-ja.")
    revision: str | None = Field(None, description="Pinned commit for hub models (required for them).")
    modality: Literal["text", "image"] = Field("text", description="image: a VLM that reads one image with the prompt.")

    @property
    def builtin(self) -> bool:
        return self.model.startswith("builtin:")

    @model_validator(mode="after")
    def _backend_needs(self) -> GenerationSettings:
        if self.backend == "openai" and self.endpoint is None:
            raise ValueError("backend openai needs an endpoint")
        if self.allow_hub and not self.revision:
            raise ValueError(f"{self.model}: a hub model needs a pinned revision")
        return self


class SamplingSettings(Strict):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    repetition_penalty: float = Field(1.05, gt=0)


def user_message(text: str, image: bool = False, image_placeholder: str | None = None) -> dict:
    """A user turn; with ``image`` it carries the image as an image content part, or as
    ``image_placeholder`` text for chat templates that only take strings."""
    if not image:
        return {"role": "user", "content": text}
    if image_placeholder:
        return {"role": "user", "content": f"{image_placeholder}\n{text}"}
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    sampling: SamplingSettings
    seed: int
    image: Image.Image | None = None


@dataclass(frozen=True)
class Generated:
    text: str | None  # None when generation itself failed
    tokens: int = 0  # output tokens
    error: str | None = None


class Generator(Protocol):
    def generate(self, requests: list[Request]) -> list[Generated]: ...

    def close(self) -> None: ...


def model_path(settings: GenerationSettings) -> str:
    """A local directory for builtin tiny models (built on first use), else the id as given."""
    if settings.builtin:
        return str(builtin_folder(settings.model, (BUILTIN_TINY_LLAMA, BUILTIN_TINY_LLAVA)))
    if not settings.allow_hub and not Path(settings.model).is_dir():
        raise ConfigError(f"generator model {settings.model!r} is not a local directory and allow_hub is false")
    return settings.model


def render_prompt(template_owner, messages: list[dict]) -> str:
    """The prompt text for local backends: the model's chat template, generation turn open.
    ``template_owner`` is the tokenizer (text models) or the processor (VLMs)."""
    return template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def load_template_owner(path: str, settings: GenerationSettings):
    from transformers import AutoProcessor, AutoTokenizer

    kwargs = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code, "local_files_only": not settings.allow_hub}
    if settings.modality == "image":
        return AutoProcessor.from_pretrained(path, **kwargs)
    return AutoTokenizer.from_pretrained(path, **kwargs)


def open_generator(settings: GenerationSettings) -> Generator:
    if settings.backend == "openai":
        return OpenAIGenerator(settings)
    if settings.backend == "scripted":
        return ScriptedGenerator(settings)
    path = model_path(settings)
    if settings.backend == "vllm":
        return VllmGenerator(path, settings)
    return TransformersGenerator(path, settings)


class TransformersGenerator:
    """transformers ``generate`` over batches of up to ``batch_size`` requests that share
    their sampling settings and kind (text or image), left-padded. A greedy request gives
    the tokens it gives alone; a sampled one draws from a generator of its own seeded by
    its seed (``SeededSampler``), so a re-run or a resumed run writes the same text
    whatever batch the request lands in."""

    def __init__(self, path: str, settings: GenerationSettings):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        self.torch = torch
        self.batch_size = settings.batch_size
        self.template_owner = load_template_owner(path, settings)
        model_class = AutoModelForImageTextToText if settings.modality == "image" else AutoModelForCausalLM
        dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.dtype]
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # a GPU pod's, or this machine's CPU
        self.model = (
            model_class.from_pretrained(
                path, revision=settings.revision, dtype=dtype, trust_remote_code=settings.trust_remote_code, local_files_only=not settings.allow_hub
            )
            .to(self.device)  # type: ignore[arg-type]  # transformers types to() as taking a model
            .eval()
        )
        self.tokenizer = getattr(self.template_owner, "tokenizer", self.template_owner)
        self.tokenizer.padding_side = "left"  # new tokens follow every prompt directly
        if self.tokenizer.pad_token_id is None:  # Llama-style tokenizers: padding is masked out, any id will do
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [self.tokenizer.eos_token_id])

    def generate(self, requests: list[Request]) -> list[Generated]:
        results: list[Generated | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((request.sampling, request.image is not None), []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                for index, generated in zip(batch, self._batch([requests[i] for i in batch])):
                    results[index] = generated
        return cast(list[Generated], results)  # every request is in one batch

    def _batch(self, requests: list[Request]) -> list[Generated]:
        texts = [render_prompt(self.template_owner, request.messages) for request in requests]
        if requests[0].image is not None:  # pixel values in the model's dtype (bf16 on a GPU)
            inputs = self.template_owner(text=texts, images=[r.image for r in requests], return_tensors="pt", padding=True).to(self.device, self.model.dtype)
        else:
            inputs = self.tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding=True).to(self.device)
        sampling = requests[0].sampling
        sampler = SeededSampler([r.seed for r in requests], sampling) if sampling.temperature > 0 else None
        with self.torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_tokens,
                do_sample=False,  # greedy over what SeededSampler leaves when sampling
                logits_processor=[sampler] if sampler else None,
                repetition_penalty=sampling.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        prompt_tokens = inputs["input_ids"].shape[1]
        return [self._decoded(row[prompt_tokens:]) for row in output]

    def _decoded(self, new) -> Generated:
        """A row's new tokens up to its end-of-sequence, without the padding after it."""
        ids = new.tolist()
        end = next((i + 1 for i, token in enumerate(ids) if token in self.eos), len(ids))
        return Generated(self.tokenizer.decode(ids[:end], skip_special_tokens=True), tokens=end)

    def close(self) -> None:
        self.model = None


class SeededSampler:
    """A transformers logits processor that samples each row's next token (temperature,
    then top-p) with that row's own random generator, seeded by its request's seed, and
    leaves only that token: greedy decoding then takes it. A row's draws depend on its
    seed and its own logits alone, not on the other requests of the batch."""

    def __init__(self, seeds: list[int], sampling: SamplingSettings):
        self.seeds = seeds
        self.temperature = sampling.temperature
        self.top_p = sampling.top_p
        self.generators = None

    def __call__(self, input_ids, scores):
        import torch

        if self.generators is None:  # on the device the logits are on
            self.generators = [torch.Generator(device=scores.device).manual_seed(seed) for seed in self.seeds]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True)
        # Keep the most likely tokens up to top_p of the mass (always the first).
        outside = ordered.cumsum(dim=-1) - ordered >= self.top_p
        ordered = ordered.masked_fill(outside, 0.0)
        chosen = torch.stack([order[row, torch.multinomial(ordered[row], 1, generator=g)] for row, g in enumerate(self.generators)])
        only = torch.full_like(scores, float("-inf"))
        return only.scatter(1, chosen, 0.0)


class VllmGenerator:
    """vLLM offline: all requests go to the engine at once (continuous batching); each
    request's seed fixes its sample independently of the batch."""

    def __init__(self, path: str, settings: GenerationSettings):
        from vllm import LLM

        self.template_owner = load_template_owner(path, settings)
        self.llm = LLM(
            model=path,
            revision=settings.revision,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            trust_remote_code=settings.trust_remote_code,
            limit_mm_per_prompt={"image": 1} if settings.modality == "image" else None,
            enforce_eager=settings.enforce_eager,
            **({} if settings.enable_chunked_prefill is None else {"enable_chunked_prefill": settings.enable_chunked_prefill}),
        )

    def generate(self, requests: list[Request]) -> list[Generated]:
        from vllm import SamplingParams

        prompts = []
        params = []
        for request in requests:
            text = render_prompt(self.template_owner, request.messages)
            prompts.append({"prompt": text, "multi_modal_data": {"image": request.image}} if request.image is not None else {"prompt": text})
            s = request.sampling
            params.append(
                SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, repetition_penalty=s.repetition_penalty, seed=request.seed)
            )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [Generated(out.outputs[0].text, tokens=len(out.outputs[0].token_ids)) for out in outputs]

    def close(self) -> None:
        self.llm = None


class ScriptedGenerator:
    """Answers from a script instead of a model, for dry runs of what follows generation
    (validation, parsing, mixtures) with text known in advance, and for the tests.

    ``model`` is a JSON file ``{"rules": [{"when": "...", "outputs": ["...", ...]}]}``. A
    request is answered by the first rule whose ``when`` occurs in its prompt text, with
    the output its seed picks: the same item and attempt get the same answer on every run,
    a retry (a new seed) may get another. A prompt no rule matches is a generation error."""

    def __init__(self, settings: GenerationSettings):
        script = json.loads(Path(settings.model).read_text(encoding="utf-8"))
        self.rules = [(rule["when"], list(rule["outputs"])) for rule in script["rules"]]

    def generate(self, requests: list[Request]) -> list[Generated]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Request) -> Generated:
        text = "\n".join(_message_text(message["content"]) for message in request.messages)
        for when, outputs in self.rules:
            if when in text:
                output = outputs[request.seed % len(outputs)]
                return Generated(output, tokens=len(output.split()))
        return Generated(None, error="no rule of the script matches the prompt")

    def close(self) -> None:
        pass


def _message_text(content) -> str:
    return content if isinstance(content, str) else "\n".join(part.get("text", "") for part in content)


class OpenAIGenerator:
    """An OpenAI-compatible chat endpoint, called concurrently (up to ``concurrency`` in
    flight) with timeouts and retries; a request that still fails is reported as an
    error for that item, never as text."""

    def __init__(self, settings: GenerationSettings):
        self.settings = settings
        assert settings.endpoint is not None  # GenerationSettings: backend openai needs an endpoint
        self.endpoint = settings.endpoint
        self.model = self.endpoint.served_model or settings.model
        key = os.environ.get(self.endpoint.api_key_env) if self.endpoint.api_key_env else None
        if self.endpoint.api_key_env and not key:
            raise ConfigError(f"generator endpoint needs ${self.endpoint.api_key_env}, which is not set")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def generate(self, requests: list[Request]) -> list[Generated]:
        return asyncio.run(self._all(requests))

    async def _all(self, requests: list[Request]) -> list[Generated]:
        import httpx

        limit = asyncio.Semaphore(self.endpoint.concurrency)
        timeout = httpx.Timeout(self.endpoint.timeout_s, connect=min(10.0, self.endpoint.timeout_s))
        async with httpx.AsyncClient(base_url=self.endpoint.base_url.rstrip("/"), headers=self.headers, timeout=timeout) as client:
            return await asyncio.gather(*(self._one(client, limit, request) for request in requests))

    async def _one(self, client, limit: asyncio.Semaphore, request: Request) -> Generated:
        import httpx

        s = request.sampling
        body = {
            "model": self.model,
            "messages": http_messages(request),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": request.seed,
        }
        if s.repetition_penalty != 1.0:  # vLLM's extension: OpenAI's own API refuses unknown fields
            body["repetition_penalty"] = s.repetition_penalty
        error = ""
        for attempt in range(self.endpoint.retries + 1):
            if attempt:
                await asyncio.sleep(self.endpoint.backoff_s * 2 ** (attempt - 1))
            try:
                async with limit:
                    response = await client.post("/chat/completions", json=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                error = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                return Generated(None, error=f"HTTP {response.status_code}: {response.text[:200]}")
            data = response.json()
            return Generated(data["choices"][0]["message"]["content"] or "", tokens=int(data.get("usage", {}).get("completion_tokens", 0)))
        return Generated(None, error=f"gave up after {self.endpoint.retries + 1} tries: {error}")

    def close(self) -> None:
        pass


def http_messages(request: Request) -> list[dict]:
    """The request's messages with its image inlined as a data URL (OpenAI's image part)."""
    if request.image is None:
        return request.messages
    buffer = io.BytesIO()
    request.image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    messages = []
    for message in request.messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": url}} if part["type"] == "image" else part for part in content]
        messages.append({**message, "content": content})
    return messages
