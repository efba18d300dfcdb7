"""The GPU-side prediction program: ``python -m asagi_dagster.eval``, launched by Dagster
Pipes as a local subprocess or a Kubernetes pod. Its extras are a ``PredictionJob``; the
committed manifest goes back as a custom message."""

from __future__ import annotations

from dagster_pipes import open_dagster_pipes

from asagi_dagster.eval.predict import PredictionJob, predict


def main() -> None:
    with open_dagster_pipes() as pipes:
        manifest = predict(PredictionJob.model_validate(pipes.extras), log=pipes.log.info)
        pipes.report_custom_message(manifest.model_dump(mode="json"))


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    main()
