"""Dasheng in Flax against the `dasheng==0.0.9` package's own model code (fp32, CPU).

The reference is `dasheng.pretrained.pretrained.Dasheng` run with torchaudio's two transforms
replaced by `torch_reference.torchaudio_double` (PyPI's torchaudio does not import beside the CPU
torch here), plus the README's AudioSet head; random weights with randomised BatchNorm statistics,
converted by `convert_torch.dasheng`. Checked: embeddings (B, tokens, D) and logits within 1e-5
relative (`numerics.TOLERANCES['float32']`; these land near 5e-7) at 1 s, 10 s, one exact chunk
(1008 frames) and 25 s (two 252-token chunks and a partial one of 121 tokens), on two custom
sizes and once on Dasheng-base; the batch-global dB floor ('batch') against a batched call and the
per-clip floor ('clip', the default) against clip-by-clip calls, on a batch where they differ.
Also: parameter counts of the published sizes, config validation, the entry points.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_close, record, rel_err

torch = pytest.importorskip("torch")

from torch_reference import dasheng_reference

try:
  dasheng_reference.import_dasheng()
except ImportError as e:
  pytest.skip(f"PyTorch reference unavailable: {e}", allow_module_level=True)

from convert_torch.dasheng import convert_state_dict, infer_config
from convert_torch.params import count_params
from dass_jax import models
from dass_jax.models import Dasheng, DashengConfig

# (embed_dim, depth, num_heads, classes)
SIZES = [(64, 2, 4, 7), (48, 3, 3, 5)]
LENGTHS = {"1s": 16000, "10s": 160000, "one_chunk": 1007 * 160, "25s": 400123}


def _reference(embed_dim, depth, num_heads, classes, seed=0):
  torch.manual_seed(seed)
  model = dasheng_reference.DashengClassifier(embed_dim, depth, num_heads, classes)
  return dasheng_reference.randomize_(model, seed + 1)


def _convert(model, db_floor="batch"):
  sd = {k: v.numpy() for k, v in dasheng_reference.classifier_state_dict(model).items()}
  config = infer_config(sd, num_heads=model.encoder.blocks[0].attn.num_heads)
  params = convert_state_dict(sd, config, "classifier")
  return Dasheng(dataclasses.replace(config, db_floor=db_floor)), params


def _waveforms(samples, seed=0):
  """Loud noise and a quiet clip whose last third is digital silence (the floors then differ)."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((2, samples)).astype(np.float32)
  x[1] *= 1e-4
  x[1, 2 * samples // 3 :] = 0.0
  return x


def _run_reference(model, x):
  with torch.no_grad():
    embeddings, logits = model(torch.from_numpy(x))
  return embeddings.numpy(), logits.numpy()


def _run(module, params, x):
  forward = jax.jit(lambda p, w: module.apply({"params": p}, w, mutable=["intermediates"]))
  logits, state = forward(params, x)
  return np.asarray(state["intermediates"]["embeddings"][0]), np.asarray(logits)


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"D{s[0]}_depth{s[1]}")
def pair(request):
  reference = _reference(*request.param)
  return reference, *_convert(reference)


@pytest.mark.parametrize("length", list(LENGTHS))
def test_batched_call_matches_dasheng(pair, length):
  reference, module, params = pair
  x = _waveforms(LENGTHS[length])
  ref_embeddings, ref_logits = _run_reference(reference, x)
  embeddings, logits = _run(module, params, x)
  tokens = (1 + LENGTHS[length] // 160) // 4
  assert embeddings.shape == ref_embeddings.shape == (2, tokens, module.config.embed_dim)
  errors = [
    assert_close(embeddings, ref_embeddings, name=f"embeddings {length}"),
    assert_close(logits, ref_logits, name=f"logits {length}"),
  ]
  record(
    "Dasheng embeddings and logits vs the dasheng package (2 small sizes, 1 s to 25 s; worst)",
    max(errors),
    1e-5,
  )


def test_clip_floor_matches_dasheng_clip_by_clip():
  reference = _reference(*SIZES[0])
  module, params = _convert(reference)
  clip_module = Dasheng(dataclasses.replace(module.config, db_floor="clip"))
  x = _waveforms(LENGTHS["1s"], seed=1)
  embeddings, logits = _run(clip_module, params, x)
  for i in range(len(x)):
    ref_embeddings, ref_logits = _run_reference(reference, x[i : i + 1])
    assert_close(embeddings[i : i + 1], ref_embeddings, name=f"embeddings clip {i}")
    assert_close(logits[i : i + 1], ref_logits, name=f"logits clip {i}")
  # The quiet clip's silence is floored differently by a batch-global maximum.
  _, batch_logits = _run(module, params, x)
  assert rel_err(batch_logits[1], logits[1]) > 1e-3
  assert_close(batch_logits[0], logits[0])


def test_base_size_matches_dasheng():
  reference = _reference(768, 12, 12, 527, seed=3)
  module, params = _convert(reference)
  assert count_params(params) == 85_854_735
  x = _waveforms(LENGTHS["10s"], seed=2)[:1]
  ref_embeddings, ref_logits = _run_reference(reference, x)
  embeddings, logits = _run(module, params, x)
  errors = [
    assert_close(embeddings, ref_embeddings, name="base embeddings"),
    assert_close(logits, ref_logits, name="base logits"),
  ]
  record("Dasheng-base embeddings and logits vs the dasheng package (10 s)", max(errors), 1e-5)


def _abstract_count(config):
  module = models.build_model(config)
  x = jnp.zeros(config.example_input_shape())
  return count_params(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))["params"])


def test_published_sizes_count_as_documented():
  # Encoder parameters include BatchNorm's 128 running statistics (params here, buffers in torch).
  assert _abstract_count(DashengConfig.base(num_classes=0)) == 85_447_936  # 85.45 M
  assert _abstract_count(DashengConfig.base()) == 85_854_735  # 85.85 M with the AudioSet head
  assert _abstract_count(DashengConfig.b06(num_classes=0)) == 630_333_696
  assert _abstract_count(DashengConfig.b12(num_classes=0)) == 1_134_047_488
  assert DashengConfig() == DashengConfig.base()


def test_config_round_trip_validation_and_registry():
  config = DashengConfig.b06(num_classes=10, db_floor="batch")
  assert models.config_from_dict(config.to_dict()) == config
  assert models.spec_of(config).input_kind == "waveform"
  assert isinstance(models.build_model(config), Dasheng)
  for bad, match in (
    ({"num_heads": 5}, "not divisible"),
    ({"db_floor": "global"}, "db_floor must be one of"),
    ({"dtype": "float16"}, "dtype must be one of"),
    ({"depth": 0}, "depth must be >= 1"),
    ({"num_classes": -1}, "num_classes must be >= 0"),
  ):
    with pytest.raises(ValueError, match=match):
      DashengConfig(**bad)


def test_entry_points_agree_and_encoder_only_pools():
  config = DashengConfig(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=3)
  module, encoder = Dasheng(config), Dasheng(dataclasses.replace(config, num_classes=0))
  x = _waveforms(20000)

  @jax.jit
  def entry_points(x):
    params = module.init(jax.random.PRNGKey(0), x)["params"]
    variables = {"params": params}
    logits, state = module.apply(variables, x, mutable=["intermediates"])
    spec = module.apply(variables, x, method=Dasheng.spectrogram)
    encoder_params = {k: v for k, v in params.items() if not k.startswith("head")}
    return {
      "logits": logits,
      "sown": state["intermediates"]["embeddings"][0],
      "pooled": state["intermediates"]["pooled"][0],
      "tokens": module.apply(variables, x, method=Dasheng.embed),
      "spec": spec,
      "encoded": module.apply(variables, spec, method=Dasheng.encode),
      "encoder_pooled": encoder.apply({"params": encoder_params}, x),
    }

  out = jax.device_get(entry_points(x))
  tokens = out["tokens"]
  assert out["spec"].shape == (2, 126, 64) and tokens.shape == (2, 31, 32)
  assert out["logits"].shape == (2, 3)
  np.testing.assert_allclose(out["sown"], tokens, rtol=1e-6)
  np.testing.assert_allclose(out["encoded"], tokens, rtol=1e-6)
  np.testing.assert_allclose(out["pooled"], tokens.mean(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["encoder_pooled"], tokens.mean(1), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="at least 480 samples"):
    jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x[:, :400]))


def test_bfloat16_stays_close_to_float32():
  config = DashengConfig(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, num_classes=4)
  f32_module, bf16_module = Dasheng(config), Dasheng(dataclasses.replace(config, dtype="bfloat16"))
  x = _waveforms(32000)

  @jax.jit
  def both(x):
    params = f32_module.init(jax.random.PRNGKey(1), x)["params"]
    return f32_module.apply({"params": params}, x), bf16_module.apply({"params": params}, x)

  f32, bf16 = both(x)
  assert bf16.dtype == jnp.float32
  assert_close(bf16, f32, dtype=jnp.bfloat16, name="bfloat16 logits")
