"""`asagi demo` as a newcomer runs it (issue 20 §1): a first run on a fresh root, then a
second with nothing changed, side by side in one invocation. Printed for each: the
whole time, the demo's own phase times, the longest time without a line of output, and
how many runs ran or were skipped as unchanged; then the re-run's share of the first.

Targets: the first run at most 5 minutes on an idle 2-core machine, never 15 s without
a line, the re-run at most 60 s.

    python -m benchmarks.bench_demo
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from tests.conftest import asagi_timed, shipped_profile_env


def run(env: dict, label: str) -> float:
    output, silence, seconds = asagi_timed(env, "demo")
    [phases] = [line for line in output.splitlines() if line.startswith("phase times: ")]
    ran = len(re.findall(r": (success|FAILED) \(", output))
    skipped = output.count(": unchanged (")
    print(f"{label:<8} {seconds:6.1f} s in all, longest silence {silence:4.1f} s, {ran} runs ran, {skipped} skipped; {phases}")
    return seconds


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="asagi-bench-demo-") as folder:
        env = shipped_profile_env(Path(folder))
        first = run(env, "first")
        again = run(env, "re-run")
    print(f"re-run / first: {again / first:.3f}")


if __name__ == "__main__":
    main()
