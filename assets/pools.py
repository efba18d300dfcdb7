"""Dagster concurrency pools the assets run in, and what their limits are."""

import dagster as dg


def pool_limit(instance: dg.DagsterInstance, pool: str) -> int | None:
    """How many steps of ``pool`` may run at once: its own limit, else the instance's
    default for pools; None when unlimited."""
    storage = instance.event_log_storage
    if pool in storage.get_concurrency_keys():
        return storage.get_concurrency_info(pool).slot_count
    return instance.global_op_concurrency_default_limit
