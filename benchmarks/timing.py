"""Wall-clock timing shared by the benchmark scripts."""

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
  """Median wall time of `fn()` over `repeats` calls, after `warmup` untimed calls.

  `fn` must block until its result is ready (e.g. call `jax.block_until_ready`).
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def alternating_medians(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
  """Median wall time of each call, after one warm-up call each, the calls taking turns.

  Side-by-side comparisons use this: load from other work on the machine then falls on every
  implementation alike instead of on whichever ran during it. Each call must block.
  """
  for call in calls.values():
    call()
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}
