"""The selective-scan problems the models really pose, read off the models themselves.

    dass_ss2d_shapes(DassConfig.small(), frames=1028)  # one Ss2dShape per distinct SS2D block
    aum_scan_shapes(AumConfig.base())                  # one ScanShape per distinct scan

Each traces the model's `init` abstractly (`jax.eval_shape`: no compute, no parameters in
memory) with scan_impl="pallas" while the kernel entry points are replaced by recorders that
note their arguments' shapes and return zeros of the right shape. The CUDA lowering test and
`benchmarks/offline_compile.py` lower the Pallas kernels at exactly these shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp

from pallas_kernels import pallas_scan, pallas_ss2d_fused


@dataclasses.dataclass(frozen=True)
class Ss2dShape:
  """An SS2D core call: x (batch, height, width, d), d_state n, dt rank `rank`."""

  height: int
  width: int
  d: int
  n: int
  rank: int


@dataclasses.dataclass(frozen=True)
class ScanShape:
  """A selective-scan call: u (batch, groups * d, length), d_state n."""

  groups: int
  d: int
  n: int
  length: int


@contextlib.contextmanager
def _recording(module, name: str, record):
  original = getattr(module, name)
  setattr(module, name, record)
  try:
    yield
  finally:
    setattr(module, name, original)


def _trace_init(model, shape) -> None:
  jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def dass_ss2d_shapes(config, frames: int) -> list[Ss2dShape]:
  """The distinct SS2D core shapes of a DASS config on (1, frames, mel) input, in model order."""
  from dass_jax.models import DASS

  seen: list[Ss2dShape] = []

  def record(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, **kwargs):
    _, height, width, d = x.shape
    shape = Ss2dShape(height, width, d, A_logs.shape[1], dt_projs_weight.shape[2])
    if shape not in seen:
      seen.append(shape)
    return jnp.zeros(x.shape, kwargs.get("out_dtype") or x.dtype)

  model = DASS(dataclasses.replace(config, scan_impl="pallas"))
  with _recording(pallas_ss2d_fused, "ss2d_scan_fused", record):
    _trace_init(model, (1, frames, config.num_mel_bins))
  return seen


def aum_scan_shapes(config) -> list[ScanShape]:
  """The distinct selective-scan shapes of an AuM config at its max_length, in model order."""
  from dass_jax.models.aum import AuM

  seen: list[ScanShape] = []

  def record(u, delta, A, B, C, D=None, delta_bias=None, **kwargs):
    _, channels, length = u.shape
    groups = B.shape[1]
    shape = ScanShape(groups, channels // groups, A.shape[1], length)
    if shape not in seen:
      seen.append(shape)
    return jnp.zeros(u.shape, kwargs.get("out_dtype") or u.dtype)

  model = AuM(dataclasses.replace(config, scan_impl="pallas"))
  with _recording(pallas_scan, "selective_scan", record):
    _trace_init(model, config.example_input_shape())
  return seen
