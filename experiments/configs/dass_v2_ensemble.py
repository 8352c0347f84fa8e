r"""DASS v2-style: DASS distilled from an ensemble of two teachers (v2: AST and HTS-AT) on AudioSet.

    A=/data/audioset
    ARGS=small,full,ast=/models/ast_audioset,second=/models/sslam_as2m
    ARGS=$ARGS,train=$A/train.json,valid=$A/valid.json,test=$A/eval.json
    ARGS=$ARGS,labels=$A/class_labels_indices.csv,weights=$A/train_weight.csv
    python -m experiments.train --config experiments/configs/dass_v2_ensemble.py:$ARGS \
      --workdir /exp/dass_v2_small

Arguments after ':' (comma separated): `small` or `medium`, `balanced` or `full`, the teachers
`ast` and `second` (converted checkpoints or train work directories of any registered model,
each read with its own input kind: fbank, or 16 kHz waveform for Dasheng), `combine` ('logits',
the default, or 'probs'; `experiments.losses.combine_teacher_logits`), the paths `train`, `valid`,
`test`, `labels`, `weights`, `init` as in `dass_v3.py`, and `runlocal` (a tiny DASS on the paths
you pass, a few steps; the tests use the synthetic data and two tiny teachers).

Any field of an ensemble member can be overridden, e.g.
`--config.teacher.ensemble.second.cache=/cache/second_logits.npy` (a cache needs the teacher's
input unaugmented: `experiments/teacher.py`).

What is known and what is not. DASS v2 (48.6 / 48.9 mAP) was distilled from "an ensemble of AST
and HTS-AT"; the authors did not publish how the two were combined or weighted. HTS-AT reads
32 kHz audio through a front end of its own, which this repository does not have yet, so the
second teacher is whatever registered model you give (SSLAM, a DASS, AuM, Dasheng). The default
combination is the mean of the teachers' logits (it works with every distillation loss); the mean
of their probabilities is the other choice. Everything else is DASS v1's recipe
(`audioset_dass.py`), an assumption about v2.
"""

from experiments.configs import common, dass_v3
from experiments.losses import ENSEMBLE_COMBINES


def get_config(arg=None):
  arg = common.parse_arg(
    arg,
    lazy=True,
    size="small",
    set="full",
    ast="",
    second="",
    combine="logits",
    train="",
    valid="",
    test="",
    labels="",
    weights="",
    init="",
    runlocal=False,
    choices={
      "size": ("small", "medium"),
      "set": ("balanced", "full"),
      "combine": ENSEMBLE_COMBINES,
    },
  )
  paths = {k: arg[k] for k in ("train", "valid", "test", "labels", "weights", "init") if arg[k]}
  base_arg = ",".join(
    [arg.size, arg.set, *(f"{k}={v}" for k, v in paths.items())]
    + (["runlocal"] if arg.runlocal else [])
  )
  c = dass_v3.get_config(base_arg)
  c.teacher.path = ""
  c.teacher.combine = arg.combine
  for name in ("ast", "second"):
    c.teacher.ensemble[name] = {"path": arg[name], "cache": "", "dtype": ""}
  return c
