"""Reading training-framework checkpoints (fairseq's) without their code and without running any.

    obj, stubbed = load_checkpoint("checkpoint_best.pt")       # tensors and containers
    state_dict = obj["model"]

A fairseq checkpoint is a `torch.save`d dict: the weights under "model", beside the training state
("cfg", "optimizer_history", "extra_state", "last_optimizer_state"), which may pickle objects of
fairseq's own classes (meters, dataclass configs, enums) or numpy scalars. `torch.load(
weights_only=True)` refuses such a file, and a plain `torch.load` would import fairseq and run
whatever the pickle names. This loader goes between the two: torch reads the archive and its
tensor storages as usual, and every global the pickle names goes through `find_class` here:
  * allowed, and rebuilt: the tensor rebuild functions and types of torch (`torch._utils.
    _rebuild_tensor_v2` and its siblings, Parameter, Size, device, dtypes, layouts),
    collections.OrderedDict, and the harmless builtins set, frozenset, slice, complex, bytearray,
    object (and `_codecs.encode`, how old pickles store bytes);
  * refused, with a ConversionError naming it: any other global of a module that can run code or
    touch the system (builtins such as eval or getattr, os, subprocess, sys, importlib, pickle,
    torch's other functions, ...): no checkpoint needs one, a crafted file does;
  * anything else (fairseq.*, omegaconf.*, numpy.*, ...): a `Stub`, an inert object that records
    the name and whatever state the pickle gives it. Nothing of the named module is imported or
    called. A stub where a tensor is expected is reported by the converter as not a tensor.
The names of the stubbed classes are returned, for the converter's summary.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

from convert_torch.io import ConversionError

# Globals that are rebuilt: (module, name).
_TORCH_REBUILD = (
  "_rebuild_tensor",
  "_rebuild_tensor_v2",
  "_rebuild_tensor_v3",
  "_rebuild_parameter",
  "_rebuild_parameter_with_state",
)
_BUILTINS = ("set", "frozenset", "slice", "complex", "bytearray", "object")
# Module roots whose other globals are refused outright.
DENIED_ROOTS = frozenset(
  {
    "builtins",
    "__builtin__",
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",
    "marshal",
    "ctypes",
    "code",
    "codeop",
    "pty",
    "io",
    "pathlib",
    "tempfile",
    "multiprocessing",
    "threading",
    "signal",
    "functools",
    "operator",
    "types",
    "inspect",
    "webbrowser",
    "torch",
  }
)


class Stub:
  """An object of a class the loader does not rebuild: it keeps the pickle's name and state.

  `stub_name` is 'module.Name'; `args` the constructor arguments, `state` what BUILD gave it,
  `items` what APPEND / SETITEM added (for list or dict subclasses).
  """

  stub_name = "?"

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

  def __new__(cls, *args, **kwargs):
    return super().__new__(cls)

  def __setstate__(self, state):
    self.state = state

  def __setitem__(self, key, value):
    self.items.append((key, value))

  def append(self, value):
    self.items.append(value)

  def extend(self, values):
    self.items.extend(values)

  def __repr__(self) -> str:
    return f"<stub of {self.stub_name}>"


def _reconstructor(cls, base, state):
  """copyreg._reconstructor (protocol 0/1 objects) for stub classes only."""
  if isinstance(cls, type) and issubclass(cls, Stub):
    return cls()
  raise ConversionError(f"refused to unpickle: copyreg._reconstructor of {cls!r}")


def _allowed(module: str, name: str):
  """The object a pickle may name at module.name, or None when it is not on the allowed list."""
  import torch

  if module == "torch._utils" and name in _TORCH_REBUILD:
    return getattr(torch._utils, name)
  if module == "torch" and name in ("Size", "device"):
    return getattr(torch, name)
  if module == "torch.nn.parameter" and name == "Parameter":
    return torch.nn.Parameter
  if module == "torch":
    value = getattr(torch, name, None)
    if isinstance(value, (torch.dtype, torch.layout)):
      return value
  if module == "collections" and name == "OrderedDict":
    return collections.OrderedDict
  if module in ("builtins", "__builtin__") and name in _BUILTINS:
    return getattr(builtins, name)
  if module == "_codecs" and name == "encode":
    return codecs.encode
  if module == "copyreg" and name == "_reconstructor":
    return _reconstructor
  return None


def _pickle_module(stubbed: set[str]) -> types.ModuleType:
  """A module object torch.load takes as `pickle_module`, whose Unpickler resolves globals as the
  module docstring says and records the stubbed names in `stubbed`."""
  stubs: dict[str, type] = {}

  class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
      value = _allowed(module, name)
      if value is not None:
        return value
      if module.split(".")[0] in DENIED_ROOTS:
        raise ConversionError(
          f"refused to unpickle {module}.{name}: a checkpoint holds tensors and plain data, and "
          "this global could run code (the file may be crafted; it was not loaded)"
        )
      full = f"{module}.{name}"
      if full not in stubs:
        stubs[full] = type(name, (Stub,), {"stub_name": full, "__module__": __name__})
      stubbed.add(full)
      return stubs[full]

  def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()

  module = types.ModuleType("convert_torch.restricted_pickle.unpickler")
  module.Unpickler, module.load = Unpickler, load
  return module


def load_checkpoint(path: str | os.PathLike) -> tuple[Any, list[str]]:
  """Unpickles a torch.save file as the module docstring says.

  Returns:
    (the object, with CPU tensors (memory-mapped for the zip format), plain containers and stubs;
    the sorted 'module.Name' of every stubbed class).

  Raises:
    FileNotFoundError: no such file.
    ConversionError: the pickle names a refused global, or the file is not a torch.save file.
  """
  import torch

  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint file not found: {path}")
  stubbed: set[str] = set()
  try:
    obj = torch.load(
      str(path),
      map_location="cpu",
      weights_only=False,
      pickle_module=_pickle_module(stubbed),
      mmap=zipfile.is_zipfile(path),
    )
  except ConversionError:
    raise
  except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as e:
    raise ConversionError(f"{path}: not a readable torch.save checkpoint ({e})") from e
  return obj, sorted(stubbed)
