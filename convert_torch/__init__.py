"""Import PyTorch checkpoints (DASS, VMamba, AST, Dasheng, AuM, SSLAM) into dass_jax params."""

from convert_torch.io import ConversionError, check_keys, load_state_dict

__all__ = ["ConversionError", "check_keys", "load_state_dict"]
