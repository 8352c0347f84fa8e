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
