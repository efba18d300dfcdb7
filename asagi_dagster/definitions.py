"""The Dagster code location: each group's definitions (``build_defs`` in each module of
``assets/``) merged, with the resources of the active profile (ASAGI_CONFIG, default
configs/local.yaml).

The only module of the library that imports dagster.
"""

import dagster as dg

from asagi_dagster.config import load_config, profile_path
from assets import datasets, evaluation, filters, synthesis, training, web
from resources import build_resources

GROUPS = (web, filters, datasets, synthesis, training, evaluation)


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    path = str(config_path or profile_path())
    config = load_config(path)
    return dg.Definitions.merge(
        *(group.build_defs(config) for group in GROUPS),
        dg.Definitions(
            resources=build_resources(path, config),
            # Steps run in the run's own process: a step in a fresh process re-imports the code
            # location (seconds each), which dominated short per-shard runs. GPU jobs whose
            # steps can run side by side keep the multiprocess executor (synthesized_corpora).
            executor=dg.in_process_executor,
        ),
    )


defs = build_definitions()
