"""AST conversion: transformers (in-memory, saved) and original-repo checkpoints match PyTorch."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import max_rel_err, record

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from convert_torch.ast import (
  LAYOUTS,
  ConversionError,
  config_from_transformers,
  convert,
  convert_state_dict,
  detect_layout,
  expected_shapes,
  infer_config,
  main,
  strip_module_prefix,
)
from convert_torch.params import count_params
from dass_jax import load_model
from dass_jax.models import AST, AstConfig
from torch_reference.ast_sine import get_sin_pos

# (max_length, frequency_stride, time_stride, num_layers, qkv_bias)
HF_CASES = [(100, 10, 10, 2, True), (300, 16, 16, 2, True), (200, 12, 8, 3, False)]
RTOL = 1e-5


def _perturb(module, seed, scale=0.1):
  """Moves every trainable parameter off its default (LayerNorm 1/0, zero tokens) reproducibly."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in sorted(module.named_parameters()):
      if p.requires_grad:
        p.add_(scale * torch.randn(p.shape, generator=gen))
  return module.eval()


def _hf_model(case, seed=0):
  max_length, fstride, tstride, layers, qkv_bias = case
  config = transformers.ASTConfig(
    hidden_size=64,
    num_hidden_layers=layers,
    num_attention_heads=4,
    intermediate_size=96,
    max_length=max_length,
    frequency_stride=fstride,
    time_stride=tstride,
    qkv_bias=qkv_bias,
    num_labels=5,
    attn_implementation="eager",
  )
  torch.manual_seed(seed)
  return _perturb(transformers.ASTForAudioClassification(config), seed)


def _fbank(frames, batch=2, seed=1):
  return np.random.default_rng(seed).standard_normal((batch, frames, 128), dtype=np.float32)


@functools.cache
def _jitted(config):
  fn = lambda p, x: AST(config).apply({"params": p}, x, mutable=["intermediates"])
  return jax.jit(fn)


def _run(config, params, x):
  logits, state = _jitted(config)(params, x)
  return np.asarray(logits), [np.asarray(h) for h in state["intermediates"]["hidden_states"]]


def _numpy_sd(module):
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


@pytest.fixture(
  scope="module", params=HF_CASES, ids=lambda c: "len{}_fs{}_ts{}_L{}_qkv{}".format(*c)
)
def hf_case(request):
  model = _hf_model(request.param)
  x = _fbank(model.config.max_length)
  with torch.no_grad():
    out = model(torch.from_numpy(x), output_hidden_states=True)
  hidden = [h.numpy() for h in out.hidden_states]
  return model, x, out.logits.numpy(), hidden


def test_in_memory_state_dict_matches(hf_case):
  model, x, logits, hidden = hf_case
  sd = _numpy_sd(model)
  assert detect_layout(sd) == "transformers"
  config = config_from_transformers(model.config.to_dict())
  logits_jax, hidden_jax = _run(config, convert_state_dict(sd, config), x)
  assert max_rel_err(logits_jax, logits) <= RTOL
  assert len(hidden_jax) == len(hidden) == config.num_layers + 1
  for ours, ref in zip(hidden_jax, hidden):
    assert max_rel_err(ours, ref) <= RTOL
  errors = [max_rel_err(logits_jax, logits)] + [
    max_rel_err(o, r) for o, r in zip(hidden_jax, hidden)
  ]
  record(
    "AST logits and every hidden state vs transformers (3 configs, random weights; worst)",
    max(errors),
    RTOL,
    "max_rel_err",
  )


def test_saved_folder_converts_through_cli(hf_case, tmp_path):
  model, x, logits, hidden = hf_case
  model.save_pretrained(tmp_path / "hf")
  saved = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert saved["model_type"] == "audio-spectrogram-transformer"
  assert main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
  meta = json.loads((tmp_path / "out" / "config.json").read_text())
  assert meta["source_format"] == "ast/transformers_legacy"
  module, params, config = load_model(tmp_path / "out")
  assert config == config_from_transformers(model.config.to_dict())
  assert isinstance(module, AST)
  logits_jax, hidden_jax = _run(config, params, x)
  assert max_rel_err(logits_jax, logits) <= RTOL
  for ours, ref in zip(hidden_jax, hidden):
    assert max_rel_err(ours, ref) <= RTOL


def test_both_transformers_layouts_give_identical_params(tmp_path):
  model = _hf_model(HF_CASES[2], seed=3)
  model.save_pretrained(tmp_path)
  config, saved, layout = convert(tmp_path)
  assert layout == "transformers_legacy"
  in_memory = convert_state_dict(_numpy_sd(model), config)
  jax.tree.map(np.testing.assert_array_equal, saved, in_memory)
  assert config.qkv_bias is False and "bias" not in saved["blocks_0"]["attn"]["qkv"]


def test_weights_file_without_config_infers_architecture(tmp_path):
  model = _hf_model(HF_CASES[1], seed=4)
  model.save_pretrained(tmp_path / "hf")
  weights = tmp_path / "hf" / "model.safetensors"
  config, _, _ = convert(weights, num_heads=4, frequency_stride=16, time_stride=16, max_length=300)
  expected = config_from_transformers(model.config.to_dict())
  assert config == expected
  # Without --max-length the shortest length giving the 18 time patches is chosen.
  config, _, _ = convert(weights, num_heads=4, frequency_stride=16, time_stride=16)
  assert config.grid == expected.grid and config.max_length == 17 * 16 + 16


# A tiny torch twin of the original AST (YuanGongND/ast ASTModel over timm 0.4.5 ViT blocks).


class _Attention(torch.nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = torch.nn.Linear(dim, 3 * dim)
    self.proj = torch.nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(torch.nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = torch.nn.Linear(dim, hidden)
    self.fc2 = torch.nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class _Block(torch.nn.Module):
  def __init__(self, dim, heads, hidden):
    super().__init__()
    self.norm1 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.attn = _Attention(dim, heads)
    self.norm2 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.mlp = _Mlp(dim, hidden)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class _OriginalAST(torch.nn.Module):
  """`ASTModel` layout: `v` (DeiT-distilled ViT with an audio patch conv) and `mlp_head`."""

  def __init__(
    self,
    dim=64,
    depth=2,
    heads=4,
    hidden=96,
    classes=5,
    fstride=10,
    tstride=10,
    tdim=100,
    pos_emb_type="learned",
  ):
    super().__init__()
    self.v = torch.nn.Module()
    self.v.patch_embed = torch.nn.Module()
    self.v.patch_embed.proj = torch.nn.Conv2d(1, dim, 16, stride=(fstride, tstride))
    fdim_out = (128 - 16) // fstride + 1
    tdim_out = (tdim - 16) // tstride + 1
    self.v.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
    self.v.dist_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
    if pos_emb_type == "sine":  # the original's fixed (N, D) table, saved in the state dict
      table = get_sin_pos(fdim_out * tdim_out + 2, dim)
      self.v.pos_embed = torch.nn.Parameter(table, requires_grad=False)
    else:
      self.v.pos_embed = torch.nn.Parameter(torch.zeros(1, fdim_out * tdim_out + 2, dim))
    self.v.blocks = torch.nn.ModuleList(_Block(dim, heads, hidden) for _ in range(depth))
    self.v.norm = torch.nn.LayerNorm(dim, eps=1e-6)
    self.v.head = torch.nn.Linear(dim, 1000)  # timm's ImageNet heads, unused by AST
    self.v.head_dist = torch.nn.Linear(dim, 1000)
    self.mlp_head = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, classes))

  def forward(self, x):
    x = self.v.patch_embed.proj(x.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)
    tokens = torch.cat([self.v.cls_token, self.v.dist_token], 1).expand(x.shape[0], -1, -1)
    x = torch.cat([tokens, x], dim=1) + self.v.pos_embed
    for block in self.v.blocks:
      x = block(x)
    x = self.v.norm(x)
    return self.mlp_head((x[:, 0] + x[:, 1]) / 2)


@pytest.mark.parametrize("strides, tdim", [((10, 10), 100), ((12, 8), 150)])
def test_original_checkpoint_matches(tmp_path, strides, tdim):
  torch.manual_seed(5)
  twin = _perturb(_OriginalAST(fstride=strides[0], tstride=strides[1], tdim=tdim), seed=5)
  x = _fbank(tdim)
  with torch.no_grad():
    ref = twin(torch.from_numpy(x)).numpy()
  path = tmp_path / "ast_original.pth"
  torch.save({f"module.{k}": v for k, v in twin.state_dict().items()}, path)
  argv = [
    str(path),
    str(tmp_path / "out"),
    "--num-heads",
    "4",
    "--frequency-stride",
    str(strides[0]),
    "--time-stride",
    str(strides[1]),
    "--max-length",
    str(tdim),
  ]
  assert main(argv) == 0
  _, params, config = load_model(tmp_path / "out")
  assert config == AstConfig.original_repo(
    num_classes=5,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    mlp_dim=96,
    frequency_stride=strides[0],
    time_stride=strides[1],
    max_length=tdim,
  )
  logits, _ = _run(config, params, x)
  assert max_rel_err(logits, ref) <= RTOL


def test_original_sine_checkpoint_converts_to_sine_positions(tmp_path):
  """pos_emb_type='sine' stores a fixed (N, D) table: it becomes pos_embed_type='sine', no param,
  and the converted model runs other lengths as the original's length study does."""
  torch.manual_seed(6)
  twin = _perturb(_OriginalAST(tdim=100, pos_emb_type="sine"), seed=6)
  path = tmp_path / "ast_sine.pth"
  torch.save({f"module.{k}": v for k, v in twin.state_dict().items()}, path)
  assert main([str(path), str(tmp_path / "out"), "--num-heads", "4"]) == 0
  _, params, config = load_model(tmp_path / "out")
  assert config.pos_embed_type == "sine" and config.grid == (12, 9)
  assert "pos_embed" not in params
  for frames in (100, 260):
    x = _fbank(frames)
    with torch.no_grad():  # the original's length study: a new table for the new grid
      twin.v.pos_embed = torch.nn.Parameter(get_sin_pos(12 * ((frames - 16) // 10 + 1) + 2, 64))
      ref = twin(torch.from_numpy(x)).numpy()
    logits, _ = _run(config, params, x)
    assert max_rel_err(logits, ref) <= RTOL
  sd = _numpy_sd(twin)
  sd["v.pos_embed"] = sd["v.pos_embed"] + 1e-3
  with pytest.raises(ConversionError, match="not its sinusoid"):
    convert_state_dict(sd, infer_config(sd, "original", num_heads=4), "original")
  with pytest.raises(ConversionError, match="learned positions only"):
    expected_shapes(dataclasses.replace(config, pos_embed_type="sine"), "transformers")


def test_audioset_config_parameter_count():
  with torch.device("meta"):
    hf = transformers.ASTForAudioClassification(transformers.ASTConfig(num_labels=527))
  config = config_from_transformers(hf.config.to_dict())
  assert config == AstConfig()
  sd = {k: np.broadcast_to(np.float32(0), v.shape) for k, v in hf.state_dict().items()}
  assert {k: v.shape for k, v in sd.items()} == expected_shapes(config, "transformers")
  assert infer_config(sd, "transformers") == config
  params = convert_state_dict(sd, config)
  shapes = jax.eval_shape(lambda: AST(config).init(jax.random.key(0), jnp.zeros((1, 1024, 128))))[
    "params"
  ]
  assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, params)
  assert count_params(params) == count_params(shapes) == hf.num_parameters() == 86_594_063
  assert params["pos_embed"].shape == (1, 1214, 768)


def test_original_audioset_checkpoint_layout_is_inferred():
  """The released audioset_10_10_0.4593.pth layout: DataParallel keys plus timm's unused heads."""
  config = AstConfig.original_repo()
  shapes = {
    **expected_shapes(config, "original"),
    "v.head.weight": (1000, 768),
    "v.head.bias": (1000,),
    "v.head_dist.weight": (1000, 768),
    "v.head_dist.bias": (1000,),
  }
  sd = {f"module.{k}": np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
  stripped = strip_module_prefix(sd)
  assert detect_layout(stripped) == "original"
  assert infer_config(stripped, "original") == config
  assert count_params(convert_state_dict(sd, config)) == 86_594_063


def test_layouts_have_the_same_parameter_count():
  counts = {
    layout: sum(np.prod(s) for s in expected_shapes(AstConfig(), layout).values())
    for layout in LAYOUTS
  }
  assert set(counts.values()) == {86_594_063}


@pytest.fixture(scope="module")
def small_sd():
  return _numpy_sd(_hf_model(HF_CASES[0]))


@pytest.fixture(scope="module")
def small_config(small_sd):
  return infer_config(small_sd, "transformers", num_heads=4, max_length=100)


def test_missing_key_is_named(small_sd, small_config):
  sd = dict(small_sd)
  del sd["audio_spectrogram_transformer.layers.1.mlp.fc2.bias"]
  with pytest.raises(
    ConversionError,
    match=r"1 missing:\s+audio_spectrogram_transformer"
    r"\.layers\.1\.mlp\.fc2\.bias",
  ):
    convert_state_dict(sd, small_config)


def test_unexpected_key_is_named(small_sd, small_config):
  sd = {**small_sd, "audio_spectrogram_transformer.layers.0.extra.weight": np.zeros(3)}
  with pytest.raises(ConversionError, match=r"1 unexpected:\s+.*layers\.0\.extra\.weight"):
    convert_state_dict(sd, small_config)


def test_misshaped_key_is_named(small_sd, small_config):
  sd = {**small_sd, "classifier.dense.weight": np.zeros((6, 64), np.float32)}
  with pytest.raises(
    ConversionError,
    match=r"classifier\.dense\.weight: file \(6, 64\) vs "
    r"model \(5, 64\)",
  ):
    convert_state_dict(sd, small_config)


def test_wrong_grid_hint_is_explained(small_sd):
  with pytest.raises(ConversionError, match="--max-length 96"):
    infer_config(small_sd, "transformers", num_heads=4, max_length=300)
  with pytest.raises(ConversionError, match="--frequency-stride"):
    infer_config(small_sd, "transformers", num_heads=4, frequency_stride=7)


def test_default_heads_follow_head_dim_64(small_sd):
  assert infer_config(small_sd, "transformers").num_heads == 1
  assert infer_config(small_sd, "transformers").max_length == 96


def test_not_an_ast_checkpoint():
  with pytest.raises(ConversionError, match="not an AST classifier checkpoint"):
    detect_layout({"encoder.weight": np.zeros(2)})


def test_cli_reports_errors(tmp_path, capsys, small_sd):
  (tmp_path / "empty").mkdir()
  assert main([str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
  assert "model.safetensors" in capsys.readouterr().err
  assert main([str(tmp_path / "nope.pth"), str(tmp_path / "out")]) == 1
  assert "not found" in capsys.readouterr().err
  path = tmp_path / "bad.pth"
  sd = {k: torch.from_numpy(v) for k, v in small_sd.items() if "layernorm_after" not in k}
  torch.save(sd, path)
  assert main([str(path), str(tmp_path / "out"), "--num-heads", "4"]) == 1
  err = capsys.readouterr().err
  assert "4 missing" in err and "layers.1.layernorm_after.weight" in err
  assert not (tmp_path / "out").exists()


def test_cli_refuses_existing_output_and_bad_config(tmp_path, capsys):
  model = _hf_model(HF_CASES[0], seed=6)
  model.save_pretrained(tmp_path / "hf")
  assert main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
  assert main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 1
  assert "already holds" in capsys.readouterr().err
  assert main([str(tmp_path / "hf"), str(tmp_path / "out2"), "--num-heads", "5"]) == 1
  assert "not divisible" in capsys.readouterr().err
  hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
  (tmp_path / "hf" / "config.json").write_text(json.dumps({**hf_config, "hidden_act": "relu"}))
  assert main([str(tmp_path / "hf"), str(tmp_path / "out3")]) == 1
  assert "hidden_act 'relu'" in capsys.readouterr().err
