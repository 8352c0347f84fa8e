"""Shared pytest fixtures: CPU-only JAX, the golden PyTorch fixtures beside the project."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "dass_torch"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
  """Path of ../shared/fixtures/dass_torch; skips the test when the folder is absent."""
  if not SHARED_FIXTURES.is_dir():
    pytest.skip(
      f"golden PyTorch fixtures not found at {SHARED_FIXTURES} "
      "(they live in ../shared beside the project checkout)"
    )
  return SHARED_FIXTURES
