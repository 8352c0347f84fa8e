r"""The quickstart with a tiny Dasheng (a ViT on raw 16 kHz audio) as the student instead of DASS.

    python -m experiments.train --config experiments/configs/quickstart_dasheng.py \
        --workdir work_dirs/quickstart_dasheng

Everything else is `experiments/configs/quickstart.py` (the same synthetic data, AST teacher,
recipe and stages: teacher, student_kd, student_nokd). The student is a Dasheng of width 64,
depth 2 and 4 heads trained from scratch; it reads the batch's waveform (the clip's audio over the
span of the 198 fbank frames, 31 920 samples: 200 mel frames, 50 tokens), so SpecAugment and the
fbank noise do not reach it; the AST teacher of `student_kd` reads the fbank, SpecAugment
included (`experiments/teacher.py`). Its chunks are 50 tokens, the training clip's length, as
Dasheng's 10.08 s chunks are its 10 s training clips, so in the length study every chunk of a long
input is a window of the length it was trained on. Its default work directory is
work_dirs/quickstart_dasheng (the teacher is trained again there). `:runlocal` shrinks it with
the rest of the quickstart.
"""

import ml_collections

from dass_jax.constants import SAMPLE_RATE
from dass_jax.frontends import dasheng_mel, kaldi_fbank
from dass_jax.models import dasheng
from experiments.configs import common, quickstart


def clip_tokens(target_frames: int) -> int:
  """Dasheng tokens of the waveform a batch holds for clips of `target_frames` fbank frames."""
  window, hop, _ = kaldi_fbank.frame_geometry(SAMPLE_RATE)
  samples = (target_frames - 1) * hop + window
  return dasheng_mel.num_frames(samples) // dasheng.PATCH_FRAMES


def get_config(arg=None):
  runlocal = common.parse_arg(arg, runlocal=False).runlocal
  c = quickstart.get_config(arg)
  c.model_type = "dasheng"
  c.model = ml_collections.ConfigDict(
    {
      "embed_dim": 64,
      "depth": 2,
      "num_heads": 4,
      "mlp_dim": 256,
      "chunk_tokens": clip_tokens(c.input.target_frames),  # 50 for 198 frames
    }
  )
  c.workdir = "work_dirs/quickstart_dasheng"  # never the DASS quickstart's folder
  if runlocal:
    c.model.embed_dim, c.model.depth, c.model.num_heads, c.model.mlp_dim = 16, 1, 2, 32
  return c
