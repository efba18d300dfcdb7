"""The training program: ``torchrun ... -m asagi_dagster.train``, launched by Dagster
Pipes as a local subprocess or a Kubernetes pod, or by hand / an indexed Job with
``--job <url of a TrainJob JSON>``.

Every rank reads the job; only rank 0 talks back to Dagster (metrics as custom
messages and log lines while training, the result last), so one pipe has one writer.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

from asagi_dagster.train.trainer import TrainJob, train


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m asagi_dagster.train")
    parser.add_argument("--job", help="a TrainJob as JSON (a path or fsspec URL); default: the Dagster Pipes extras")
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))
    if args.job:
        import fsspec

        with fsspec.open(args.job, "rt") as f:
            job = TrainJob.model_validate_json(f.read())
        train(job, report=_print_metrics if rank == 0 else _quiet, log=_print if rank == 0 else _quiet)
        return
    if rank != 0:
        train(TrainJob.model_validate(_pipes_extras()), report=_quiet, log=_quiet)
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        job = TrainJob.model_validate(pipes.extras)

        def report(metrics: dict) -> None:
            pipes.report_custom_message({"metrics": metrics})
            pipes.log.info(" ".join(f"{k}={_short(v)}" for k, v in metrics.items()))

        result = train(job, report=report, log=pipes.log.info)
        pipes.report_custom_message({"result": {k: v for k, v in result.items() if k != "history"}})


def _pipes_extras() -> Mapping[str, Any]:
    """The job for ranks other than 0: read from the Pipes context, no message writer."""
    from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader

    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as context:
        return context["extras"]


def _print(message: str) -> None:
    print(message, flush=True)


def _print_metrics(metrics: dict) -> None:
    print(json.dumps({"metrics": metrics}), flush=True)


def _quiet(*_args) -> None:
    pass


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
