"""Pure-PyTorch reference implementations used by the parity tests (never imported by dass_jax)."""
