r"""Audio needle in a haystack (NIAH) study: DASS vs AST mAP over input durations.

Default: the quickstart's models and synthetic data (2 s clips, so 2 s is the reference duration):

    python -m experiments.train --config experiments/configs/quickstart.py \
        --workdir work_dirs/quickstart
    python -m experiments.niah --config experiments/configs/niah.py --workdir work_dirs/niah

AudioSet (converted checkpoints; 10 s needles, 10 s reference, up to 2.5 h):

    python -m experiments.niah --config experiments/configs/niah.py:audioset \
        --workdir work_dirs/niah_audioset \
        --config.models.dass=converted/dass_small --config.models.ast=converted/ast_audioset \
        --config.data.datafile=eval.json --config.data.label_csv=class_labels_indices.csv

`:runlocal` shrinks everything (a few needles, two short durations) for a seconds-long check; the
tests use it with tiny random-init checkpoints. Any field can be overridden with
`--config.field=value` (tuples as `--config.durations_s="(10,60,600)"`).

AST is evaluated only up to `ast_max_duration_s`: its attention scores are (heads, N, N) for N =
12 * (frames - 6) / 10 tokens, so memory grows quadratically (AST-base at 60 s: N ~ 7200, 12 heads,
~2.5 GB per score tensor). DASS has no such cap; at long durations it runs with batch 1.
"""

import ml_collections

from experiments.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, audioset=False)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.seed = 0  # noise generation and babble offsets
  # name -> converted checkpoint folder or experiments.train work directory ('' = skip).
  c.models = ml_collections.ConfigDict(
    {"dass": "work_dirs/quickstart/student_kd", "ast": "work_dirs/quickstart/teacher"}
  )
  c.data = ml_collections.ConfigDict(
    {
      "datafile": "",  # eval datafile; '' = the synthetic dataset below
      "label_csv": "",
      "synthetic": {
        "cache_dir": "",
        "seed": 0,
        "num_train": 800,
        "num_eval": 200,
        "clip_seconds": 2.0,
      },  # the quickstart's dataset
    }
  )
  c.babble_pool = 20  # first eval rows: babble material, never needles
  c.num_needles = 40  # next eval rows: the needles
  c.needle_seconds = 10.0  # needles are cropped to this length
  c.babble_talkers = 4  # tracks summed into babble
  c.haystacks = ("zeros", "white", "babble")
  c.snrs_db = (10.0,)  # needle-to-noise ratio of the noise haystacks
  c.durations_s = (2.0, 10.0, 30.0, 60.0, 300.0, 1200.0, 3600.0)  # first = reference
  c.positions = (0.0, 0.5, 1.0)
  c.ast_max_duration_s = 60.0
  c.batch_frames = 8192  # frames per batch (batch 1 above this length)
  c.block_samples = 60 * 16000  # waveform samples per streamed fbank block

  if arg.audioset:
    c.models.dass, c.models.ast = "", ""
    c.babble_pool, c.num_needles = 50, 500
    c.durations_s = (10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 9000.0)

  if arg.runlocal:
    c.babble_pool, c.num_needles, c.babble_talkers = 2, 6, 2
    c.data.synthetic.num_train, c.data.synthetic.num_eval = 1, 8
    c.data.synthetic.clip_seconds = 1.0
    c.durations_s = (1.0, 3.0)
    c.positions = (0.0, 1.0)
    c.ast_max_duration_s = 1.0
    c.batch_frames = 256
    c.block_samples = 7000  # several blocks per haystack, not a multiple of the hop
  return c
