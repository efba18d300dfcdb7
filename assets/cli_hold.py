"""While an ``asagi`` command runs jobs on an instance, the automations stand aside.

The CLI runs the steps in order itself (ingest, indexes, filters, ... the leaderboard);
with `dagster dev` open on the same instance, the sensors would otherwise start the same
steps from the CLI's fresh materializations, side by side with it. So the CLI keeps a
hold in the instance's key-value store, renewed every few seconds while it runs and
marked ended when it exits; the automation conditions (``while_no_cli_runs``) and the
sensors (``cli_holding``) do nothing while a hold is fresh, nor for HOLD_LINGER_S after a
command ended: `asagi ingest && asagi filter` is two commands, and in the seconds between
them the automations would otherwise start what the second is about to run (the missing
indexes, built twice). A CLI killed before marking it ended
holds for HOLD_FRESH_S at most, and not at all on its own machine, where its process is
seen to be gone. When the hold ends, what the CLI made counts as handled:
an eager condition does not fire again for it, and whatever the CLI left undone is
picked up as before.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
import warnings

import dagster as dg

HOLD_KEY = "asagi/cli_hold"
HOLD_FRESH_S = 60.0
HOLD_RENEW_S = 10.0
HOLD_LINGER_S = 30.0  # after a command ends: time for a script's next command to start and take the hold


def set_hold(instance: dg.DagsterInstance, what: str, ended: bool = False) -> None:
    """Renew this process's hold, or (``ended``) mark it ended: it then lingers HOLD_LINGER_S."""
    hold = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "renewed_at": time.time(), "ended": ended}
    instance.run_storage.set_cursor_values({HOLD_KEY: json.dumps(hold)})


def cli_holding(instance: dg.DagsterInstance, now: float | None = None) -> str | None:
    """What a running CLI command is doing, when its hold is fresh; else None."""
    value = instance.run_storage.get_cursor_values({HOLD_KEY}).get(HOLD_KEY)
    if not value:
        return None
    hold = json.loads(value)
    age = (now or time.time()) - hold["renewed_at"]
    if hold.get("ended"):  # its process is gone by design: the linger alone decides
        return f"asagi CLI (pid {hold['pid']}) ended {hold['what']} {age:.0f} s ago and may start another command" if age <= HOLD_LINGER_S else None
    if age > HOLD_FRESH_S:
        return None
    if hold.get("host") == socket.gethostname() and not _alive(hold["pid"]):  # killed (kill -9): no wait
        return None
    return f"asagi CLI (pid {hold['pid']}) is running {hold['what']}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class WhileNoCliRuns(dg.AutomationCondition):
    """True for every candidate unless an asagi CLI command holds the instance."""

    @property
    def description(self) -> str:
        return "no asagi CLI command is running jobs on this instance"

    @property
    def name(self) -> str:
        return "while_no_cli_runs"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        held = cli_holding(context.asset_graph_view.instance)
        return dg.AutomationResult(context, true_subset=context.get_empty_subset() if held else context.candidate_subset)


def while_no_cli_runs(condition: dg.AutomationCondition) -> dg.AutomationCondition:
    return condition & WhileNoCliRuns()


# Built once when missing (on_missing would skip an asset missing from the start);
# a failed build waits for a person rather than retrying every tick.
BUILD_WHEN_MISSING = dg.AutomationCondition.missing() & ~dg.AutomationCondition.in_progress() & ~dg.AutomationCondition.execution_failed()


def automation_sensor(name: str, **kwargs) -> dg.AutomationConditionSensorDefinition:
    """An automation condition sensor whose conditions may include ``while_no_cli_runs``:
    such a condition is evaluated in the code server (use_user_code_server, a beta
    parameter whose notice is Dagster's business, not the user's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.AutomationConditionSensorDefinition(name, use_user_code_server=True, **kwargs)


class CliHold:
    """The CLI's side: ``renew(what)`` before each run it starts; a thread renews the hold
    every HOLD_RENEW_S while the command lives, and it is marked ended when the command exits."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self.what = ""
        self.renewer: threading.Thread | None = None

    def renew(self, what: str) -> None:
        self.what = what
        set_hold(self.instance, what)
        if self.renewer is None:
            self.renewer = threading.Thread(target=self._keep, name="asagi-cli-hold", daemon=True)
            self.renewer.start()
            atexit.register(lambda: set_hold(self.instance, self.what, ended=True))

    def _keep(self) -> None:
        while True:
            time.sleep(HOLD_RENEW_S)
            set_hold(self.instance, self.what)
