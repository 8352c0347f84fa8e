"""A compact pure-PyTorch DASS (fp32, CPU) whose state_dict keys are the original code's.

Written from the forward-pass description in ../shared/fixtures/dass_torch/README.md, for parity
tests: it loads the golden fixture's state dict strictly and reproduces its logits, and it builds
checkpoints of any depths / dims / num_classes the fixtures do not have.

    model = DassTorch(num_classes=7, depths=(1, 1, 1, 1), dims=(32, 64, 128, 256)).eval()
    logits = model(x)                           # x: (batch, frames, 128) -> (batch, 7)
    sd = dataparallel_state_dict(model)         # keys 'module.v.…' as DataParallel(DASS) writes

Layout is torch's: NCHW feature maps with H = mel and W = time. The selective scan is a plain
sequential loop over L (fine for test-sized inputs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

K_DIRECTIONS = 4
LN_EPS = 1e-5


class LayerNorm2d(nn.LayerNorm):
  """LayerNorm over the channel axis of an NCHW map (VMamba's LN2D); eps 1e-5."""

  def __init__(self, channels: int):
    super().__init__(channels, eps=LN_EPS)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x.permute(0, 2, 3, 1)
    x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
    return x.permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
  """A Linear applied as a 1x1 conv over NCHW; weight stays 2-D (out, in)."""

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, self.weight[:, :, None, None], self.bias)


def cross_scan(u: torch.Tensor) -> torch.Tensor:
  """(B, C, H, W) -> (B, 4, C, H*W): row-major, column-major, and both reversed."""
  rows = u.flatten(2)
  cols = u.transpose(2, 3).flatten(2)
  xs = torch.stack([rows, cols], dim=1)
  return torch.cat([xs, xs.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, h: int, w: int) -> torch.Tensor:
  """(B, 4, C, H*W) in each route's order -> (B, C, H*W) row-major sum of the four routes."""
  b, _, c, _ = ys.shape
  fwd = ys[:, 0:2] + ys[:, 2:4].flip(-1)
  cols = fwd[:, 1].view(b, c, w, h).transpose(2, 3).reshape(b, c, h * w)
  return fwd[:, 0] + cols


def selective_scan(u, delta, a, bs, cs, d, delta_bias):
  """Mamba selective scan with softplus(delta + bias); channel c reads group c // (C / G).

  Args:
    u, delta: (B, C, L). a: (C, N) (already negative). bs, cs: (B, G, N, L). d, delta_bias: (C,).

  Returns:
    (B, C, L): y_l = C_l . h_l + D u_l with h_l = exp(dt_l A) h_{l-1} + dt_l B_l u_l.
  """
  batch, channels, length = u.shape
  groups = bs.shape[1]
  dt = F.softplus(delta + delta_bias[None, :, None])
  b_full = bs.repeat_interleave(channels // groups, dim=1)  # (B, C, N, L)
  c_full = cs.repeat_interleave(channels // groups, dim=1)
  decay = torch.exp(dt[:, :, None, :] * a[None, :, :, None])  # (B, C, N, L)
  drive = (dt * u)[:, :, None, :] * b_full
  state = u.new_zeros(batch, channels, a.shape[1])
  ys = []
  for step in range(length):
    state = decay[..., step] * state + drive[..., step]
    ys.append((state * c_full[..., step]).sum(-1))
  return torch.stack(ys, dim=-1) + d[None, :, None] * u


class SS2D(nn.Module):
  """VMamba SS2D, forward_type 'v05_noz' (no z gate), channel-first, depthwise conv without bias."""

  def __init__(
    self, d_model: int, d_state: int = 1, ssm_ratio: float = 1.0, dt_rank: int | None = None
  ):
    super().__init__()
    d_inner = int(ssm_ratio * d_model)
    rank = dt_rank or math.ceil(d_model / 16)
    self.d_state, self.dt_rank = d_state, rank
    k = K_DIRECTIONS
    # Parameters first, then sub-modules: this is the original state_dict order.
    self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, d_inner))
    self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank))
    self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
    self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state))
    self.Ds = nn.Parameter(torch.ones(k * d_inner))
    self.out_norm = LayerNorm2d(d_inner)
    self.in_proj = Linear2d(d_model, d_inner, bias=False)
    self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=False)
    self.out_proj = Linear2d(d_inner, d_model, bias=False)
    self._init_ssm(d_inner, rank)

  @torch.no_grad()
  def _init_ssm(self, d_inner: int, rank: int):
    """Mamba init: x_proj U(+-d^-1/2), dt_proj U(+-R^-1/2), dt in [1e-3, 0.1], A = 1..N."""
    nn.init.uniform_(self.x_proj_weight, -(d_inner**-0.5), d_inner**-0.5)
    nn.init.uniform_(self.dt_projs_weight, -(rank**-0.5), rank**-0.5)
    dt = torch.exp(
      torch.rand(self.dt_projs_bias.shape) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    ).clamp(min=1e-4)
    self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    self.A_logs.copy_(
      torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(self.A_logs)
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """(B, d, H, W) -> (B, d, H, W)."""
    u = F.silu(self.conv2d(self.in_proj(x)))
    batch, d_inner, h, w = u.shape
    length, k, n, rank = h * w, K_DIRECTIONS, self.d_state, self.dt_rank
    xs = cross_scan(u).reshape(batch, k * d_inner, length)
    x_dbl = F.conv1d(xs, self.x_proj_weight.reshape(-1, d_inner, 1), groups=k)
    dts, bs, cs = torch.split(x_dbl.view(batch, k, -1, length), [rank, n, n], dim=2)
    dts = F.conv1d(
      dts.reshape(batch, k * rank, length),
      self.dt_projs_weight.reshape(k * d_inner, rank, 1),
      groups=k,
    )
    ys = selective_scan(
      xs,
      dts,
      -torch.exp(self.A_logs),
      bs.contiguous(),
      cs.contiguous(),
      self.Ds,
      self.dt_projs_bias.reshape(-1),
    )
    y = cross_merge(ys.view(batch, k, d_inner, length), h, w).view(batch, d_inner, h, w)
    return self.out_proj(self.out_norm(y))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = Linear2d(dim, hidden)
    self.act = nn.GELU()
    self.fc2 = Linear2d(hidden, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
  """x + SS2D(norm(x)), then x + MLP(norm2(x)) (eval: no drop path)."""

  def __init__(
    self, dim: int, d_state: int, ssm_ratio: float, dt_rank: int | None, mlp_ratio: float
  ):
    super().__init__()
    self.norm = LayerNorm2d(dim)
    self.op = SS2D(dim, d_state, ssm_ratio, dt_rank)
    self.norm2 = LayerNorm2d(dim)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.op(self.norm(x))
    return x + self.mlp(self.norm2(x))


class Stage(nn.Module):
  """`layers.i`: blocks, then downsample v3 (conv 3x3 s2 p1 -> LN2D) or Identity."""

  def __init__(self, dim: int, depth: int, out_dim: int | None, **block_kwargs):
    super().__init__()
    self.blocks = nn.ModuleList(VSSBlock(dim, **block_kwargs) for _ in range(depth))
    self.downsample = (
      nn.Identity()
      if out_dim is None
      else nn.Sequential(
        nn.Identity(),
        nn.Conv2d(dim, out_dim, 3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(out_dim),
      )
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for block in self.blocks:
      x = block(x)
    return self.downsample(x)


class Classifier(nn.Module):
  """LN2D -> global average pool -> Linear."""

  def __init__(self, dim: int, num_classes: int):
    super().__init__()
    self.norm = LayerNorm2d(dim)
    self.head = nn.Linear(dim, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.norm(x).mean(dim=(2, 3)))


class VSSM(nn.Module):
  """The backbone `DASS.v`: patch embed v2 -> stages -> classifier. (B, C, H, W) -> logits."""

  def __init__(
    self,
    num_classes: int,
    depths: Sequence[int],
    dims: Sequence[int],
    in_chans: int = 1,
    d_state: int = 1,
    ssm_ratio: float = 1.0,
    dt_rank: int | None = None,
    mlp_ratio: float = 4.0,
  ):
    super().__init__()
    half = dims[0] // 2
    self.patch_embed = nn.Sequential(
      nn.Conv2d(in_chans, half, 3, stride=2, padding=1),
      nn.Identity(),
      LayerNorm2d(half),
      nn.Identity(),
      nn.GELU(),
      nn.Conv2d(half, dims[0], 3, stride=2, padding=1),
      nn.Identity(),
      LayerNorm2d(dims[0]),
    )
    self.layers = nn.ModuleList(
      Stage(
        dim,
        depth,
        dims[i + 1] if i + 1 < len(dims) else None,
        d_state=d_state,
        ssm_ratio=ssm_ratio,
        dt_rank=dt_rank,
        mlp_ratio=mlp_ratio,
      )
      for i, (dim, depth) in enumerate(zip(dims, depths))
    )
    self.classifier = Classifier(dims[-1], num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.patch_embed(x)
    for layer in self.layers:
      x = layer(x)
    return self.classifier(x)


class DassTorch(nn.Module):
  """DASS: (batch, frames, mel) fbank -> (batch, num_classes) logits; parameters under `v.`."""

  def __init__(
    self,
    num_classes: int = 527,
    depths: Sequence[int] = (2, 2, 8, 2),
    dims: Sequence[int] = (96, 192, 384, 768),
    **kwargs,
  ):
    super().__init__()
    self.v = VSSM(num_classes, depths, dims, **kwargs)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.v(x.unsqueeze(1).transpose(2, 3))


def dataparallel_state_dict(model: DassTorch) -> dict[str, torch.Tensor]:
  """The state dict as `torch.nn.DataParallel(model).state_dict()` names it ('module.v.…')."""
  return {f"module.{k}": v for k, v in model.state_dict().items()}


def load_dataparallel_state_dict(model: DassTorch, state_dict) -> None:
  """Strictly loads a 'module.v.…' state dict (tensors or numpy arrays) into `model`."""
  prefix = "module."
  bad = [k for k in state_dict if not k.startswith(prefix)]
  if bad:
    raise KeyError(f"keys without the {prefix!r} prefix: {bad[:5]}")
  model.load_state_dict(
    {k[len(prefix) :]: torch.as_tensor(v) for k, v in state_dict.items()}, strict=True
  )


@torch.no_grad()
def perturb_(model: nn.Module, seed: int = 0) -> None:
  """Moves every parameter off its default init (the fixtures' recipe, simplified).

  LayerNorm weights 1 + 0.1 N and biases 0.1 N; conv / linear biases 0.1 N; Ds 1 + 0.1 N;
  A_logs 0.5 N; dt bias from dt log-uniform in [0.05, 1]; in_proj x5; x_proj x3. Other weights
  keep their init. Afterwards the scan term is comparable to the D*u skip, so layout bugs show.
  """
  gen = torch.Generator().manual_seed(seed)

  def noise(p):
    return torch.randn(p.shape, generator=gen)

  for module in model.modules():
    if isinstance(module, LayerNorm2d):
      module.weight.copy_(1 + 0.1 * noise(module.weight))
      module.bias.copy_(0.1 * noise(module.bias))
    elif isinstance(module, SS2D):
      module.Ds.copy_(1 + 0.1 * noise(module.Ds))
      module.A_logs.copy_(0.5 * noise(module.A_logs))
      u = torch.rand(module.dt_projs_bias.shape, generator=gen)
      dt = torch.exp(u * -math.log(0.05) + math.log(0.05))
      module.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
      module.in_proj.weight.mul_(5.0)
      module.x_proj_weight.mul_(3.0)
    elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
      module.bias.copy_(0.1 * noise(module.bias))
