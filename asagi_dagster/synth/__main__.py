"""The GPU-side program: ``python -m asagi_dagster.synth``, launched by Dagster Pipes as
a local subprocess or a Kubernetes pod. It needs only dagster-pipes, torch,
transformers (and vllm for that backend) and this library.

Extras from the orchestrator: ``synthesis`` and ``storage`` (the profile's sections, as
JSON: the pod needs no file from the repo), ``asset`` and ``partitions`` (per partition of the run, its
upstream data URLs by input). The partitions are generated one after another with one
load of each model; each committed manifest goes back as a custom message when done.
"""

from __future__ import annotations

from dagster_pipes import open_dagster_pipes

from asagi_dagster.storage import Storage, StorageSettings
from asagi_dagster.synth.generate import run_corpora
from asagi_dagster.synth.settings import SynthesisSettings


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        synthesis = SynthesisSettings.model_validate(extras["synthesis"])
        storage = Storage(StorageSettings.model_validate(extras["storage"]))
        for manifest in run_corpora(synthesis, storage, extras["asset"], extras["partitions"], log=pipes.log.info):
            pipes.report_custom_message(manifest.model_dump(mode="json"))


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    main()
