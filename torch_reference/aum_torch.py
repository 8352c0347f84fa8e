"""A pure-PyTorch Audio Mamba (AuM) on the CPU whose state_dict keys are the released checkpoints'.

No CPU reference of AuM exists: the authors' Vision-Mamba fork of `mamba_ssm` imports its CUDA
extensions unguarded, its slow path ignores `bimamba_type`, and its RMSNorm is a Triton kernel.
This twin restates the published model files (kaistmm/Audio-Mamba-AuM `src/models/mamba_models.py`,
`src/utilities/tokenization.py`, the fork's `modules/mamba_simple.py`, `ops/selective_scan_interface
.py` and `ops/triton/layernorm.py`) with their released settings: middle class token, absolute
position embeddings, RMSNorm (eps 1e-5, no bias) with fused add-norm and an fp32 residual,
`if_devide_out=True`, no rope, no layer scale. The scan is mamba's `selective_scan_ref` (a
per-step loop, `torch_reference.dass_torch.selective_scan` with one B/C group); the causal conv is
`Conv1d(padding=d_conv - 1)` cut to the input length, as the fork's slow path computes it.

    model = AudioMambaTwin(num_classes=5, embed_dim=32, depth=2, bimamba_type="v2",
                           spectrogram_size=(32, 64)).eval()
    logits = model(x)                       # x: (batch, frames, mel) -> (batch, 5)
    model.state_dict()                      # keys as `torch.save(AudioMamba.state_dict())` writes
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torch_reference.dass_torch import selective_scan

RMS_EPS = 1e-5


class RMSNorm(nn.Module):
  """Mamba's RMSNorm with the fused residual add: `(x, residual) -> (normed, new residual)`.

  The new residual is x (first block) or x + residual, in float32 (`residual_in_fp32=True`); the
  output is residual / sqrt(mean(residual^2) + eps) * weight in x's dtype.
  """

  def __init__(self, dim: int, eps: float = RMS_EPS):
    super().__init__()
    self.eps = eps
    self.weight = nn.Parameter(torch.ones(dim))

  def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
    residual = x.float() if residual is None else x.float() + residual.float()
    rstd = torch.rsqrt(residual.square().mean(-1, keepdim=True) + self.eps)
    return (residual * rstd * self.weight.float()).to(x.dtype), residual


class Mamba(nn.Module):
  """The fork's `Mamba` mixer with `bimamba_type` 'v1' (Fo-Bi) or 'v2' (Bi-Bi); (B, L, D) -> same.

  Parameters are registered in the original order, so state_dict() lists them as the checkpoints.
  """

  def __init__(
    self,
    d_model: int,
    bimamba_type: str,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    dt_rank: int | None = None,
  ):
    super().__init__()
    if bimamba_type not in ("v1", "v2"):
      raise ValueError(f"bimamba_type must be 'v1' or 'v2', got {bimamba_type!r}")
    self.bimamba_type = bimamba_type
    d_inner = expand * d_model
    self.d_state, self.dt_rank = d_state, dt_rank or math.ceil(d_model / 16)
    a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)
    self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
    self.conv1d = self._conv(d_inner, d_conv)
    self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
    self.dt_proj = self._dt_proj(d_inner)
    self.A_log = nn.Parameter(a_log.clone())
    self.D = nn.Parameter(torch.ones(d_inner))
    self.A_b_log = nn.Parameter(a_log.clone())
    if bimamba_type == "v2":
      self.conv1d_b = self._conv(d_inner, d_conv)
      self.x_proj_b = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
      self.dt_proj_b = self._dt_proj(d_inner)
      self.D_b = nn.Parameter(torch.ones(d_inner))
    self.out_proj = nn.Linear(d_inner, d_model, bias=False)

  @staticmethod
  def _conv(channels: int, width: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, width, groups=channels, padding=width - 1, bias=True)

  def _dt_proj(self, d_inner: int) -> nn.Linear:
    proj = nn.Linear(self.dt_rank, d_inner, bias=True)
    with torch.no_grad():
      nn.init.uniform_(proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
      dt = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
      dt = dt.clamp(min=1e-4)
      proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    return proj

  def _scan_inputs(self, x, conv1d, x_proj, dt_proj):
    """x (B, E, L) -> u, delta (B, E, L) and B, C (B, 1, S, L), as the fused path computes them."""
    length = x.shape[-1]
    u = F.silu(conv1d(x)[..., :length])
    x_dbl = x_proj(u.transpose(1, 2))  # (B, L, R + 2S)
    dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
    delta = (dt @ dt_proj.weight.T).transpose(1, 2)  # the bias enters the scan as delta_bias
    return u, delta, b.transpose(1, 2)[:, None], c.transpose(1, 2)[:, None]

  def forward(self, hidden: torch.Tensor) -> torch.Tensor:
    xz = self.in_proj(hidden).transpose(1, 2)  # (B, 2E, L)
    x, z = xz.chunk(2, dim=1)
    a = -torch.exp(self.A_log.float())
    a_b = -torch.exp(self.A_b_log.float())
    u, delta, b, c = self._scan_inputs(x, self.conv1d, self.x_proj, self.dt_proj)
    bias = self.dt_proj.bias.float()
    y = selective_scan(u, delta, a, b, c, self.D.float(), bias) * F.silu(z)
    if self.bimamba_type == "v1":  # bimamba_inner_fn: the same u, delta, B, C, D reversed
      flip = lambda t: t.flip([-1])
      y_b = selective_scan(flip(u), flip(delta), a_b, flip(b), flip(c), self.D.float(), bias)
      out = y + (y_b * F.silu(flip(z))).flip([-1])
    else:  # two mamba_inner_fn_no_out_proj branches, the second on the reversed xz, halved
      x_b, z_b = xz.flip([-1]).chunk(2, dim=1)
      u_b, delta_b, b_b, c_b = self._scan_inputs(x_b, self.conv1d_b, self.x_proj_b, self.dt_proj_b)
      y_b = selective_scan(u_b, delta_b, a_b, b_b, c_b, self.D_b.float(), self.dt_proj_b.bias)
      out = (y + (y_b * F.silu(z_b)).flip([-1])) / 2
    return self.out_proj(out.transpose(1, 2))


class Block(nn.Module):
  """`layers.i`: (h, residual) -> (mixer(RMSNorm(residual + h)), residual + h)."""

  def __init__(self, dim: int, bimamba_type: str, **mamba_kwargs):
    super().__init__()
    self.mixer = Mamba(dim, bimamba_type, **mamba_kwargs)
    self.norm = RMSNorm(dim)

  def forward(self, hidden, residual):
    normed, residual = self.norm(hidden, residual)
    return self.mixer(normed), residual


class PatchEmbed(nn.Module):
  """`patch_embed.proj`: Conv2d(1, D, P, stride P, bias) over (B, 1, mel, frames), flattened."""

  def __init__(self, dim: int, patch: int):
    super().__init__()
    self.proj = nn.Conv2d(1, dim, patch, stride=patch, bias=True)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)  # (B, F*T, D), index f * T + t


class PosEmbed(nn.Module):
  """`pos_embed.pos_embed` (1, 1 + N, D); row 0 is added to the class token, wherever it sits."""

  def __init__(self, num_patches: int, dim: int):
    super().__init__()
    self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + num_patches, dim))

  def forward(self, x, token_position: int):
    # Move the class token to the front, add the embeddings, move it back (FlexiPosEmbed).
    cls = x[:, token_position : token_position + 1]
    x = torch.cat([cls, x[:, :token_position], x[:, token_position + 1 :]], dim=1)
    x = x + self.pos_embed
    return torch.cat([x[:, 1 : token_position + 1], x[:, :1], x[:, token_position + 1 :]], dim=1)


class AudioMambaTwin(nn.Module):
  """AuM classifier: (batch, frames, mel) -> (batch, num_classes) logits.

  Attributes are named as `AudioMamba`'s, so `state_dict()` has the released key names (a
  `DataParallel` wrapper would add `module.`).
  """

  def __init__(
    self,
    num_classes: int = 527,
    embed_dim: int = 768,
    depth: int = 24,
    bimamba_type: str = "v1",
    spectrogram_size: tuple[int, int] = (128, 1024),
    patch_size: int = 16,
    **mamba_kwargs,
  ):
    super().__init__()
    self.grid = (spectrogram_size[0] // patch_size, spectrogram_size[1] // patch_size)
    num_patches = self.grid[0] * self.grid[1]
    self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, embed_dim))
    self.head = nn.Linear(embed_dim, num_classes)
    self.layers = nn.ModuleList(
      [Block(embed_dim, bimamba_type, **mamba_kwargs) for _ in range(depth)]
    )
    self.norm_f = RMSNorm(embed_dim)
    self.patch_embed = PatchEmbed(embed_dim, patch_size)
    self.pos_embed = PosEmbed(num_patches, embed_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x.unsqueeze(1).transpose(2, 3)  # (B, 1, mel, frames)
    x = self.patch_embed(x)
    batch, n, _ = x.shape
    middle = n // 2
    cls = self.cls_token.expand(batch, -1, -1)
    x = torch.cat([x[:, :middle], cls, x[:, middle:]], dim=1)
    hidden, residual = self.pos_embed(x, middle), None
    for layer in self.layers:
      hidden, residual = layer(hidden, residual)
    normed, _ = self.norm_f(hidden, residual)
    return self.head(normed[:, middle])
