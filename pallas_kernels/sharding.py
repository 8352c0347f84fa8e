"""The selective scan and the SS2D core under `shard_map` over the batch axes of a mesh.

Why: under `jit` with batch-sharded inputs, XLA's SPMD partitioner splits ordinary ops by
itself, but a Pallas kernel on GPU is an opaque custom call that it cannot split: it gathers
the inputs and runs the whole batch on every device. Each batch row of the scan is
independent, so `shard_map` can run the scan on every device's own batch slice with no
communication in the forward pass. In the backward pass the gradients of the replicated
parameters (A, D, delta_bias; the SS2D projection weights) are summed over the batch axes
by the transpose of `shard_map`. The references (`associative`, `sequential`) partition
without help; wrapping them as well is harmless.

Layouts are those of `pallas_kernels.reference` / `pallas_kernels.ss2d_core`; batched
arguments (u, delta, B, C; the SS2D input x) are split on their leading axis, everything else
is replicated. The batch must divide evenly over the product of the batch axes' sizes. On a
mesh with Explicit axes (the default of `jax.make_mesh` in JAX 0.10) the inputs are first
resharded to those specs: free when they already match (batch-sharded activations,
replicated weights), an all-gather for, e.g., FSDP-sharded projection weights.

How a model uses it: call `sharded_ss2d_scan` where it would call `ss2d_scan`, and run the
jitted step under the training mesh, e.g.

  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  with jax.set_mesh(mesh):
    logits = jax.jit(model.apply)(params, batch)   # SS2D calls sharded_ss2d_scan(x, ...)

`mesh=None` (the default) takes the mesh set by `jax.set_mesh`; with no mesh set the call is
the plain, unsharded one, so the same model code runs on one device. `batch_axes=None` splits
the batch over every mesh axis, as `experiments.sharding.batch_sharding` does; name the axes
(e.g. "data") when other axes hold model parallelism.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pallas_kernels.dispatch import selective_scan
from pallas_kernels.ss2d_core import ss2d_scan


def _context_mesh():
  """The mesh set by `jax.set_mesh` (an AbstractMesh inside jit), or None if there is none."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def _reshard(x, mesh, spec):
  """x with sharding `spec`: with Explicit mesh axes, shard_map requires inputs that match."""
  if x is None or not any(t == AxisType.Explicit for t in mesh.axis_types):
    return x
  return jax.sharding.reshard(x, NamedSharding(mesh, spec) if isinstance(mesh, Mesh) else spec)


def shard_over_batch(
  fn: Callable,
  batched: Sequence[bool],
  *,
  mesh: Mesh | None = None,
  batch_axes: str | Sequence[str] | None = None,
) -> Callable:
  """Wraps `fn(*args)` in `shard_map`: args with `batched[i]` split on axis 0, others replicated.

  Args:
    fn: a function of len(batched) positional arrays (None allowed for unbatched ones)
      returning one array whose leading axis is the batch.
    batched: per positional argument, whether its leading axis is the batch.
    mesh: the device mesh; None takes the mesh set by `jax.set_mesh`. With neither, `fn`
      is returned unchanged.
    batch_axes: mesh axis name(s) the batch is split over; None means all mesh axes.
  Returns:
    A function with the same signature and result as `fn`.
  """
  mesh = mesh if mesh is not None else _context_mesh()
  if mesh is None:
    return fn
  if batch_axes is None:
    batch_axes = tuple(mesh.axis_names)
  elif isinstance(batch_axes, str):
    batch_axes = (batch_axes,)
  batch_spec = P(tuple(batch_axes))

  def wrapped(*args):
    args = [_reshard(a, mesh, batch_spec if b else P()) for a, b in zip(args, batched)]
    present = [i for i, a in enumerate(args) if a is not None]

    def local(*local_args):
      full = list(args)
      for i, a in zip(present, local_args):
        full[i] = a
      return fn(*full)

    # check_vma=False: a Pallas call has no varying-manual-axes rule on every JAX version;
    # the transpose still sums the replicated inputs' cotangents over the batch axes.
    return jax.shard_map(
      local,
      mesh=mesh,
      check_vma=False,
      out_specs=batch_spec,
      in_specs=tuple(batch_spec if batched[i] else P() for i in present),
    )(*(args[i] for i in present))

  return wrapped


def sharded_selective_scan(
  u,
  delta,
  A,
  B,
  C,
  D=None,
  delta_bias=None,
  *,
  mesh: Mesh | None = None,
  batch_axes: str | Sequence[str] | None = None,
  **scan_kwargs,
):
  """`pallas_kernels.selective_scan`, each device scanning its slice of the batch.

  u, delta (batch, K*D, L) and B, C (batch, K, N, L) are split over `batch_axes`; A, D and
  delta_bias are replicated. `scan_kwargs` (delta_softplus, out_dtype, impl, interpret) pass
  through. Returns y (batch, K*D, L), split over the batch axes like u.
  """

  def scan(*args):
    return selective_scan(*args, **scan_kwargs)

  return shard_over_batch(
    scan, (True, True, False, True, True, False, False), mesh=mesh, batch_axes=batch_axes
  )(u, delta, A, B, C, D, delta_bias)


def sharded_ss2d_scan(
  x,
  x_proj_weight,
  dt_projs_weight,
  dt_projs_bias,
  A_logs,
  Ds,
  *,
  mesh: Mesh | None = None,
  batch_axes: str | Sequence[str] | None = None,
  **ss2d_kwargs,
):
  """`pallas_kernels.ss2d_scan` with x (batch, H, W, d) split over `batch_axes`.

  The five SS2D weights are replicated; `ss2d_kwargs` (impl, out_dtype, interpret) pass
  through. Returns (batch, H, W, d), split over the batch axes like x.
  """

  def core(*args):
    return ss2d_scan(*args, **ss2d_kwargs)

  return shard_over_batch(
    core, (True, False, False, False, False, False), mesh=mesh, batch_axes=batch_axes
  )(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds)
