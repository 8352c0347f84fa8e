r"""The quickstart with a tiny Audio Mamba (AuM) as the student instead of DASS.

    python -m experiments.train --config experiments/configs/quickstart_aum.py \
        --workdir work_dirs/quickstart_aum

Everything else is `experiments/configs/quickstart.py` (the same synthetic data, AST teacher,
recipe and stages: teacher, student_kd, student_nokd). The student is a Bi-Bi (v2) AuM of width 64
and depth 4 (0.19 M params) whose position embeddings are sized for the quickstart's clips
(`max_length` = `input.target_frames`). Its default work directory is work_dirs/quickstart_aum.
`:runlocal` shrinks it with the rest of the quickstart.
"""

import ml_collections

from experiments.configs import common, quickstart


def get_config(arg=None):
  runlocal = common.parse_arg(arg, runlocal=False).runlocal
  c = quickstart.get_config(arg)
  c.model_type = "aum"
  c.model = ml_collections.ConfigDict(
    {
      "embed_dim": 64,
      "depth": 4,
      "bimamba_type": "v2",
      "max_length": c.input.target_frames,
    }
  )
  c.workdir = "work_dirs/quickstart_aum"  # never the DASS quickstart's folder; --workdir overrides
  if runlocal:
    c.model.embed_dim, c.model.depth = 16, 1
  return c
