"""The profile: one YAML file composing every stage's settings (each stage owns its
settings module: ``web/settings.py``, ``filters/settings.py``, ``synth/settings.py``,
``train/settings.py``, ``eval/settings.py``, and the shared ones of ``storage``,
``datasets``, ``engines``, ``pods`` and ``models``).

The profile is chosen by ``ASAGI_CONFIG`` (default: ``configs/local.yaml``, the
embedded default). Unknown keys are errors, and a bad file fails at load with the
file, the key and what was expected. Relative local paths are relative to the profile
file (``settings.LocalPath``). Secrets never live here: they come from the environment
(see ``StorageSettings.s3``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, model_validator

from asagi_dagster.datasets import DatasetSource
from asagi_dagster.eval.settings import TRAINED_MODELS, EvaluationSettings
from asagi_dagster.filters.settings import FilterSettings
from asagi_dagster.models.settings import ModelRef
from asagi_dagster.pods import GpuJobSettings
from asagi_dagster.reference.settings import ReferenceTextSettings
from asagi_dagster.settings import PROFILE_DIR, ConfigError, LocalPath, Strict
from asagi_dagster.storage import StorageSettings
from asagi_dagster.synth.settings import SynthesisSettings
from asagi_dagster.train.settings import TrainingSettings
from asagi_dagster.web.settings import WebSourceSettings

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = PROJECT_DIR / "configs" / "local.yaml"
CONFIG_ENV = "ASAGI_CONFIG"


class SourcesSettings(Strict):
    web: WebSourceSettings
    datasets: dict[str, DatasetSource] = {}


class SampleSettings(Strict):
    """The embedded default's bundled sample site (generated at first run)."""

    image_server_host: str = "127.0.0.1"
    image_server_port: Annotated[int, Field(ge=1, le=65535)] = 8765


class DagsterSettings(Strict):
    home: LocalPath = Field(description="DAGSTER_HOME used when the environment sets none.")
    automation_interval_s: int = Field(
        30, ge=5, description="How often the automation sensors (indexes, filters, re-filter, leaderboard) evaluate, in seconds."
    )


class AsagiConfig(Strict):
    profile: str
    storage: StorageSettings
    sources: SourcesSettings
    filters: FilterSettings = FilterSettings()
    reference_texts: ReferenceTextSettings = ReferenceTextSettings()
    dagster: DagsterSettings
    sample: SampleSettings | None = None
    models: dict[str, ModelRef] = {}
    synthesis: SynthesisSettings | None = Field(None, description="None: the synthesis assets refuse to run, saying so.")
    gpu_jobs: GpuJobSettings = GpuJobSettings()
    training: TrainingSettings | None = Field(None, description="None: the training assets refuse to run, saying so.")
    evaluation: EvaluationSettings | None = Field(None, description="None: no evaluation assets.")

    @model_validator(mode="after")
    def _dataset_rules_valid(self) -> AsagiConfig:
        for name, dataset in self.sources.datasets.items():
            try:
                self.filters.with_rule_overrides(dataset.rules)
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"sources.datasets.{name}.rules: {exc}") from None
        return self

    @model_validator(mode="after")
    def _translations_name_english_datasets(self) -> AsagiConfig:
        for name in self.synthesis.translate_datasets if self.synthesis else []:
            dataset = self.sources.datasets.get(name)
            if dataset is None:
                raise ValueError(f"synthesis.translate_datasets: {name!r} is not in sources.datasets")
            if dataset.language != "en":
                raise ValueError(f"synthesis.translate_datasets: {name!r} is language {dataset.language!r}; only English datasets are translated")
        return self

    @model_validator(mode="after")
    def _training_models_exist(self) -> AsagiConfig:
        if self.training:
            for role in (self.training.vision_role, self.training.llm_role):
                if role not in self.models:
                    raise ValueError(f"training: models.{role} is not set (the stage 1 model is built from it)")
        return self

    @model_validator(mode="after")
    def _benchmarks_configured_once(self) -> AsagiConfig:
        evaluated = set(self.evaluation.benchmarks if self.evaluation else ()) & set(self.filters.decontamination.benchmarks)
        if evaluated:
            raise ValueError(
                f"filters.decontamination.benchmarks: {', '.join(sorted(evaluated))} is evaluated (evaluation.benchmarks), so "
                "decontamination reads its images from benchmark_items; remove it here"
            )
        return self

    @model_validator(mode="after")
    def _evaluated_models_exist(self) -> AsagiConfig:
        for name in self.evaluation.models if self.evaluation else []:
            if name in TRAINED_MODELS:
                if self.training is None:
                    raise ValueError(f"evaluation.models: {name} needs the training section")
            elif name not in self.models:
                raise ValueError(f"evaluation.models: {name!r} is neither {' nor '.join(TRAINED_MODELS)} nor a key of models")
        return self


# Error messages name the file, the key and what was expected, never the value given:
# any key can receive a secret pasted in the wrong place, and a value built by YAML
# aliases can be millions of items long. (The profile's own validators may quote a name
# that refers to another key, such as a dataset or a generator, to say which one is
# missing.) Messages are also bounded in count and size.
_MAX_ERRORS = 20
_MAX_KEY_CHARS = 80
_MAX_MESSAGE_CHARS = 200
# Values in a profile once its aliases are expanded; the shipped ones have under 500.
MAX_PROFILE_NODES = 10_000
_KINDS = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "a list"), (dict, "a mapping"))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"invalid profile {path}:"]
    items = error.errors()
    for item in items[:_MAX_ERRORS]:
        key = ".".join(_clip(str(p), _MAX_KEY_CHARS) for p in item["loc"]) or "<top level>"
        message = _clip(item["msg"], _MAX_MESSAGE_CHARS)
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif item["type"] in ("missing", "value_error", "assertion_error"):  # the message is the whole story
            lines.append(f"  {key}: {message}")
        else:
            lines.append(f"  {key}: {message} (got {_kind(item.get('input'))})")
    if len(items) > _MAX_ERRORS:
        lines.append(f"  ... and {len(items) - _MAX_ERRORS} more")
    return "\n".join(lines)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read profile {path}: {exc.strerror}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, line_start = raw.count(b"\n", 0, exc.start) + 1, raw.rfind(b"\n", 0, exc.start) + 1
        where = f"line {line}, column {exc.start - line_start + 1}"
        raise ConfigError(f"profile {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at {where}); save it as UTF-8") from None


def _parse_yaml(text: str, path: Path):
    """yaml.safe_load, refusing documents whose aliases expand past MAX_PROFILE_NODES
    (checked on the node graph, before anything is built from it)."""
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters here
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, path)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_PROFILE_NODES) > MAX_PROFILE_NODES:
            raise ConfigError(f"invalid profile {path}: its aliases expand it past {MAX_PROFILE_NODES} values (a profile has a few hundred)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_problem(exc, path)) from None
    except RecursionError:
        raise ConfigError(f"invalid YAML in profile {path}: nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes the document has with every alias expanded, counting stops past
    ``limit`` (a recursive alias never ends, so it always goes past)."""
    count, stack = 0, [root]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack += (key, value)
    return count


def _yaml_problem(exc: yaml.YAMLError, path: Path) -> str:
    """One line: where and what, without PyYAML's quoted snippet of the line (a value)."""
    mark, position = getattr(exc, "problem_mark", None), getattr(exc, "position", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else f", character {position + 1}" if position is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return _clip(f"invalid YAML in profile {path}{where}: {context + ': ' if context else ''}{problem}", 400)


def profile_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_PROFILE).resolve()


def load_config(path: str | Path | None = None) -> AsagiConfig:
    """Load and validate a profile; raises ConfigError naming file, key and expectation."""
    path = Path(path).resolve() if path else profile_path()
    raw = _parse_yaml(_read_text(path), path)
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid profile {path}: expected a mapping at the top level")
    try:
        return AsagiConfig.model_validate(raw, context={PROFILE_DIR: path.parent})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
