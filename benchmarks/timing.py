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


def blockwise_medians(
  calls: dict[str, Callable[[], object]], repeats: int, rounds: int = 1
) -> dict[str, float]:
  """Median wall time of each call over `repeats` timed calls, timed in blocks that take turns.

  In each of `rounds` rounds every implementation runs one untimed call, then its share of the
  timed calls in a row; the order of the implementations reverses from one round to the next.
  Side-by-side comparisons use this so that slow drifts of the machine's load fall on all of
  them. Blocks, not call-by-call alternation: thread pools (PyTorch's OpenMP, XLA's) spin after
  their work, and two frameworks alternating call by call fight each other's spinning threads
  (PyTorch ran 10-20x slower that way on the 2-core dev machine); the untimed call absorbs the
  switch. Each call must block.
  """
  names = list(calls)
  times = {name: [] for name in names}
  for r in range(rounds):
    share = repeats // rounds + (r < repeats % rounds)
    for name in names if r % 2 == 0 else names[::-1]:
      calls[name]()
      for _ in range(share):
        start = time.perf_counter()
        calls[name]()
        times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}
