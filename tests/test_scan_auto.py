"""`impl="auto"` on a GPU, simulated on CPU: the kernel self-check, its fallback, the override.

`dispatch._backend` and `pallas_scan.supported_on_default_backend` stand in a supported GPU.
The check then runs the real Pallas kernel (not interpreted), which cannot compile on a CPU:
the "fails to compile" case. With `kernel_check.INTERPRET` the kernel runs interpreted and
agrees (the "passes" case), or, wrapped to be off by 1 %, disagrees. Each case checks what
`auto` resolves to, what runs, and that exactly one warning is given per failing family.
"""

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_close

from dass_jax.models import DASS, DassConfig
from pallas_kernels import ScanImpl, dispatch, kernel_check, pallas_scan, reference, ss2d_core
from pallas_kernels.random_inputs import scan_inputs, ss2d_inputs

SCAN_FP32 = kernel_check.Family("scan", "float32", 1)
VERIFY = kernel_check.verify  # the cached function (tests may stand in another)


@pytest.fixture
def gpu(monkeypatch):
  """A simulated supported GPU and a fresh self-check cache; DASS_SCAN_IMPL unset."""
  monkeypatch.setattr(dispatch, "_backend", lambda: "gpu")
  monkeypatch.setattr(pallas_scan, "supported_on_default_backend", lambda: True)
  monkeypatch.delenv(dispatch.IMPL_ENV, raising=False)
  dispatch._resolve_auto.cache_clear()
  VERIFY.cache_clear()
  yield
  dispatch._resolve_auto.cache_clear()
  VERIFY.cache_clear()


def _self_check_warnings(record):
  return [w for w in record if "failed its self-check" in str(w.message)]


def test_kernel_that_fails_to_compile_falls_back_once_with_a_warning(gpu):
  args = scan_inputs(jax.random.PRNGKey(0), 1, 2, 8, 1, 40)
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    assert dispatch.resolve_impl("auto", SCAN_FP32) is ScanImpl.CHUNKED
    assert dispatch.resolve_impl("auto", SCAN_FP32) is ScanImpl.CHUNKED  # cached: no 2nd check
    y = jax.jit(dispatch.selective_scan)(*args)  # resolves inside a trace: still no 2nd check
  (warning,) = _self_check_warnings(record)
  assert warning.category is RuntimeWarning
  assert "scan kernel, float32, N=1" in str(warning.message)
  assert "chunked scan" in str(warning.message)
  result = kernel_check.verify(SCAN_FP32)
  assert not result.ok and "Error" in result.reason  # the compile error, named
  chunked = jax.jit(functools.partial(dispatch.selective_scan, impl="chunked"))
  np.testing.assert_array_equal(y, chunked(*args))
  # Without a family (asking what auto means on this backend) there is no check.
  assert dispatch.resolve_impl("auto") is ScanImpl.PALLAS


def test_kernel_that_disagrees_falls_back(gpu, monkeypatch):
  monkeypatch.setattr(kernel_check, "INTERPRET", True)
  kernel = pallas_scan.selective_scan
  monkeypatch.setattr(pallas_scan, "selective_scan", lambda *a, **k: 1.01 * kernel(*a, **k))
  with pytest.warns(RuntimeWarning, match=r"output differs from the chunked scan by 0\.01"):
    assert dispatch.resolve_impl("auto", SCAN_FP32) is ScanImpl.CHUNKED
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a second resolution must not warn again
    assert dispatch.resolve_impl("auto", SCAN_FP32) is ScanImpl.CHUNKED


def test_kernel_that_agrees_is_used_and_checked_while_tracing(gpu, monkeypatch):
  """The check compiles and runs in its own thread while the caller's jit is tracing."""
  monkeypatch.setattr(kernel_check, "INTERPRET", True)
  args = scan_inputs(jax.random.PRNGKey(3), 1, 2, 8, 4, 40)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    y = jax.jit(functools.partial(dispatch.selective_scan, interpret=True))(*args)
  family = kernel_check.Family("scan", "float32", 4)
  assert kernel_check.verify(family) == kernel_check.verify(family)  # cached
  assert kernel_check.verify(family).ok and dispatch.resolve_impl("auto", family) == "pallas"
  assert_close(y, reference.selective_scan_sequential(*args), name="auto (pallas) vs sequential")


def test_bf16_fused_kernel_that_agrees_is_used(gpu, monkeypatch):
  """The bf16 twin of the GPU test of auto (the fused SS2D family DASS uses)."""
  monkeypatch.setattr(kernel_check, "INTERPRET", True)
  family = kernel_check.Family("ss2d", "bfloat16", 1)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert dispatch.resolve_impl("auto", family) is ScanImpl.PALLAS
  result = kernel_check.verify(family)
  assert result.ok and result.reason == "agrees"


def test_each_call_checks_the_kernel_it_would_run(gpu, monkeypatch):
  checked = []
  monkeypatch.setattr(
    kernel_check,
    "verify",
    lambda family: checked.append(family) or kernel_check.CheckResult(True, "", 0),
  )
  x = ss2d_inputs(jax.random.PRNGKey(0), 1, 2, 3, 4, 3, dtype=jnp.bfloat16)
  jax.eval_shape(lambda *a: ss2d_core.ss2d_scan(*a, interpret=True), *x)
  jax.eval_shape(lambda *a: ss2d_core.ss2d_scan(*a, interpret=True, fused=False), *x)
  assert checked == [
    kernel_check.Family("ss2d", "bfloat16", 4),  # N = 3 padded to 4
    kernel_check.Family("scan", "bfloat16", 4),  # the unfused route runs the plain kernel
  ]


def test_model_resolves_auto_inside_jit_and_falls_back(gpu):
  """DASS with scan_impl='auto' on the simulated GPU: the check runs eagerly while the model
  is traced, fails (the real kernel cannot compile on CPU) and the model runs the chunked
  scan, matching the model built with scan_impl='chunked'."""
  tiny = DassConfig(num_classes=3, depths=(1,), dims=(8,), drop_path_rate=0.0)
  x = jax.random.normal(jax.random.key(1), (1, 16, tiny.num_mel_bins))
  chunked_model = DASS(dataclasses.replace(tiny, scan_impl="chunked"))
  params = jax.jit(chunked_model.init)(jax.random.key(0), x)
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    auto = jax.jit(DASS(tiny).apply)(params, x)
    jax.eval_shape(DASS(tiny).apply, params, x[:, :8])  # traced again: resolved again
  assert len(_self_check_warnings(record)) == 1
  assert_close(auto, jax.jit(chunked_model.apply)(params, x), tol=1e-6, name="auto vs chunked")


def test_environment_variable_wins_over_auto(gpu, monkeypatch):
  monkeypatch.setattr(
    kernel_check, "verify", lambda family: pytest.fail("no self-check when the env var is set")
  )
  monkeypatch.setenv(dispatch.IMPL_ENV, "sequential")
  assert dispatch.resolve_impl("auto", SCAN_FP32) is ScanImpl.SEQUENTIAL
  monkeypatch.setenv(dispatch.IMPL_ENV, "Pallas")  # case-insensitive
  assert dispatch.resolve_impl("auto", SCAN_FP32) is ScanImpl.PALLAS
  # An explicit implementation is the caller's choice; the variable only replaces auto.
  assert dispatch.resolve_impl("associative", SCAN_FP32) is ScanImpl.ASSOCIATIVE
  monkeypatch.setenv(dispatch.IMPL_ENV, "cuda")
  with pytest.raises(ValueError, match="DASS_SCAN_IMPL='cuda' is not a scan implementation"):
    dispatch.resolve_impl("auto", SCAN_FP32)


def test_environment_variable_on_cpu(monkeypatch):
  monkeypatch.setenv(dispatch.IMPL_ENV, "associative")
  assert dispatch.resolve_impl("auto") is ScanImpl.ASSOCIATIVE
  monkeypatch.setenv(dispatch.IMPL_ENV, "auto")
  assert dispatch.resolve_impl("auto") is ScanImpl.CHUNKED
