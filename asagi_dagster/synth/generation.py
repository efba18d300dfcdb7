"""One generation interface, three backends: vLLM offline (continuous batching), an
OpenAI-compatible HTTP endpoint, and transformers ``generate`` (the CPU fallback).

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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from asagi_dagster.config import ConfigError, GeneratorSettings, SamplingSettings
from asagi_dagster.models.tiny import BUILTIN_TINY_LLAMA, BUILTIN_TINY_LLAVA, tiny_llama, tiny_llava


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


def model_path(settings: GeneratorSettings) -> str:
    """A local directory for builtin tiny models (built on first use), else the id as given."""
    if settings.model in (BUILTIN_TINY_LLAMA, BUILTIN_TINY_LLAVA):
        from asagi_dagster.synth.corpus import tokenizer_corpus

        build = tiny_llama if settings.model == BUILTIN_TINY_LLAMA else tiny_llava
        return str(build(tokenizer_corpus()))
    if settings.builtin:
        raise ConfigError(f"unknown builtin model {settings.model!r} (known: {BUILTIN_TINY_LLAMA}, {BUILTIN_TINY_LLAVA})")
    if not settings.allow_hub and not Path(settings.model).is_dir():
        raise ConfigError(f"generator model {settings.model!r} is not a local directory and allow_hub is false")
    return settings.model


def render_prompt(template_owner, messages: list[dict]) -> str:
    """The prompt text for local backends: the model's chat template, generation turn open.
    ``template_owner`` is the tokenizer (text models) or the processor (VLMs)."""
    return template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def load_template_owner(path: str, settings: GeneratorSettings):
    from transformers import AutoProcessor, AutoTokenizer

    kwargs = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code, "local_files_only": not settings.allow_hub}
    if settings.modality == "image":
        return AutoProcessor.from_pretrained(path, **kwargs)
    return AutoTokenizer.from_pretrained(path, **kwargs)


def open_generator(settings: GeneratorSettings) -> Generator:
    if settings.backend == "openai":
        return OpenAIGenerator(settings)
    path = model_path(settings)
    if settings.backend == "vllm":
        return VllmGenerator(path, settings)
    return TransformersGenerator(path, settings)


class TransformersGenerator:
    """transformers ``generate``, one request at a time: each request's seed alone decides
    its sample, so a re-run or a resumed run writes the same text."""

    def __init__(self, path: str, settings: GeneratorSettings):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        self.torch = torch
        self.template_owner = load_template_owner(path, settings)
        model_class = AutoModelForImageTextToText if settings.modality == "image" else AutoModelForCausalLM
        dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.dtype]
        self.model = model_class.from_pretrained(
            path, revision=settings.revision, dtype=dtype, trust_remote_code=settings.trust_remote_code, local_files_only=not settings.allow_hub
        ).eval()
        self.tokenizer = getattr(self.template_owner, "tokenizer", self.template_owner)

    def generate(self, requests: list[Request]) -> list[Generated]:
        return [self._one(request) for request in requests]

    def _one(self, request: Request) -> Generated:
        text = render_prompt(self.template_owner, request.messages)
        if request.image is not None:
            inputs = self.template_owner(text=text, images=[request.image], return_tensors="pt")
        else:
            inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        sampling = request.sampling
        sample = sampling.temperature > 0
        self.torch.manual_seed(request.seed)
        with self.torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                repetition_penalty=sampling.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = output[0, inputs["input_ids"].shape[1] :]
        return Generated(self.tokenizer.decode(new, skip_special_tokens=True), tokens=int(new.shape[0]))

    def close(self) -> None:
        self.model = None


class VllmGenerator:
    """vLLM offline: all requests go to the engine at once (continuous batching); each
    request's seed fixes its sample independently of the batch."""

    def __init__(self, path: str, settings: GeneratorSettings):
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
            params.append(SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, repetition_penalty=s.repetition_penalty, seed=request.seed))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [Generated(out.outputs[0].text, tokens=len(out.outputs[0].token_ids)) for out in outputs]

    def close(self) -> None:
        self.llm = None


class OpenAIGenerator:
    """An OpenAI-compatible chat endpoint, called concurrently (up to ``concurrency`` in
    flight) with timeouts and retries; a request that still fails is reported as an
    error for that item, never as text."""

    def __init__(self, settings: GeneratorSettings):
        self.settings = settings
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
