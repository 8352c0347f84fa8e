r"""Audio needle in a haystack (NIAH) study: mAP of each model over input durations.

Default: the quickstart's models and synthetic data (1 s clips: 98 frames, the models' training
length), under the paper's protocol (`experiments.haystack`), from the clip alone to 120 s (122×):

    python -m experiments.train --config experiments/configs/quickstart.py \
        --workdir work_dirs/quickstart
    python -m experiments.niah --config experiments/configs/niah.py --workdir work_dirs/niah

AudioSet (converted checkpoints; every eval clip is a needle, its fbank padded/cropped to 1024
frames, so the reference is 10.24 s = the plain clip; up to 2.5 h; babble tiles the authors'
`babble_all.wav`):

    python -m experiments.niah --config experiments/configs/niah.py:audioset \
        --workdir work_dirs/niah_audioset \
        --config.models.dass=converted/dass_small --config.models.ast=converted/ast_audioset \
        --config.data.datafile=eval.json --config.data.label_csv=class_labels_indices.csv \
        --config.babble_wav=babble_all.wav

Arguments after ':' (comma separated): `audioset`, `streamed` (this repository's earlier protocol,
which measures something else: see `experiments/haystack.py`), `runlocal` (a few needles, two
short durations: a seconds-long check; the tests use it with tiny random-init checkpoints). Any
field can be overridden with `--config.field=value` (tuples as `--config.durations_s="(10,60)"`).

There is no built-in length cap: attention models run as far as memory allows (AST's scores are
(heads, N, N) for N = 12 (frames - 6) / 10 tokens; AST-base at 60 s holds ~2.5 GB per score
tensor; Dasheng attends within 10.08 s chunks, so its memory grows linearly), or as far as
`--config.max_duration_s.NAME=SECONDS` lets a model go; every model runs with batch 1 once a
batch of `batch_frames` frames holds a single input. A model that takes waveforms (Dasheng) gets
the waveform analogue of every input (`experiments/haystack.py`, "Waveform inputs").
"""

import ml_collections

from experiments.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, runlocal=False, audioset=False, streamed=False)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.seed = 0  # white noise (paper: needle i draws from (seed, i)) and babble offsets
  # name -> converted checkpoint folder or experiments.train work directory ('' = skip); the model
  # kind comes from the checkpoint. `ast_sine`: a slot for an AST with pos_embed_type='sine';
  # `aum`: e.g. work_dirs/quickstart_aum/student_kd (experiments/configs/quickstart_aum.py);
  # `dasheng`: a model that takes waveforms, e.g. work_dirs/quickstart_dasheng/student_kd
  # (experiments/configs/quickstart_dasheng.py), fed the waveform analogue of each input.
  c.models = ml_collections.ConfigDict(
    {
      "dass": "work_dirs/quickstart/student_kd",
      "ast": "work_dirs/quickstart/teacher",
      "ast_sine": "",
      "aum": "",
      "dasheng": "",
    }
  )
  c.data = ml_collections.ConfigDict(
    {
      "datafile": "",  # eval datafile; '' = the synthetic dataset below
      "label_csv": "",
      "synthetic": {
        "cache_dir": "",
        "seed": 0,
        "num_train": 800,
        "num_valid": 200,
        "num_eval": 200,
        "clip_seconds": 1.0,
      },  # the quickstart's dataset; its eval clips are the quickstart's test split
    }
  )
  c.protocol = "paper"  # 'paper' (the authors' construction) or 'streamed' (ours, earlier)
  c.babble_pool = 20  # first eval rows: babble material, never needles
  c.num_needles = 40  # next eval rows: the needles (0 = all the rows after the pool)
  c.babble_talkers = 4  # tracks summed into babble made from the pool
  c.haystacks = ("zeros", "white")  # add "babble" with --config.haystacks="('zeros','babble')"
  c.snrs_db = (10.0,)  # needle-to-noise ratio of the noise haystacks
  # paper: frames the needle fbank is padded/cropped to (the models' training length).
  c.needle_frames = 98
  # paper: babble recording tiled from its first sample ('' = babble_seconds made from the pool).
  c.babble_wav = ""
  c.babble_seconds = 15.0
  # streamed: needles are cropped to this length.
  c.needle_seconds = 10.0
  # first = reference; paper: L = round(100 d) frames (0.98 s = the 98-frame needle alone).
  c.durations_s = (0.98, 5.0, 10.0, 30.0, 60.0, 120.0)
  c.positions = (0.0, 0.5)
  # Fixed position embeddings (a 'learned' AST) at other lengths: 'sine' (the paper's substitution,
  # at every length), 'interpolate' or 'refuse'. A 'sine' AST runs any length whatever this says.
  c.length_extension = "interpolate"
  # Per-model time budget: the longest duration run, in s (0 = no limit). AST's attention time
  # and memory grow with the square of the length: at 60 s (7188 tokens) the quickstart's tiny AST
  # takes seconds per input on a 2-core CPU, at 120 s four times that.
  c.max_duration_s = ml_collections.ConfigDict(
    {"dass": 0.0, "ast": 60.0, "ast_sine": 60.0, "aum": 0.0, "dasheng": 0.0}
  )
  c.compute_dtype = "float32"  # or 'bfloat16' (half precision, as the original's fp16 autocast)
  c.batch_frames = 8192  # frames per batch (batch 1 above this length), for every input kind
  c.block_samples = 60 * 16000  # waveform samples per streamed fbank / noise block

  if arg.audioset:
    c.models.dass, c.models.ast = "", ""
    # The paper scores every eval clip; its babble is a recording (babble_wav), not eval clips.
    c.babble_pool, c.num_needles = 0, 0
    c.needle_frames = 1024
    c.haystacks = ("zeros", "white", "babble")  # the paper's three
    c.durations_s = (10.24, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 9000.0)
    c.length_extension = "sine"  # as the paper (its AST was trained with sine positions)
    c.positions = (0.0, 0.25, 0.5)
    c.max_duration_s = ml_collections.ConfigDict(dict.fromkeys(c.models, 0.0))

  if arg.streamed:
    c.protocol = "streamed"
    c.length_extension = "interpolate"
    c.durations_s = (2.0, 10.0, 30.0, 60.0, 120.0)
    c.positions = (0.0, 0.5, 1.0)
    if arg.audioset:
      c.durations_s = (10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 9000.0)
      c.babble_pool, c.num_needles = 50, 500

  if arg.runlocal:
    c.babble_pool, c.num_needles, c.babble_talkers = 2, 6, 2
    c.haystacks = ("zeros", "white", "babble")
    c.data.synthetic.num_train, c.data.synthetic.num_eval = 1, 8
    c.data.synthetic.num_valid = 0
    c.data.synthetic.clip_seconds = 1.0
    c.needle_frames = 98  # 1 s clips
    c.babble_seconds = 1.5
    c.durations_s = (1.0, 3.0) if arg.streamed else (0.98, 3.0)
    c.positions = (0.0, 1.0) if arg.streamed else (0.0, 0.25)
    c.batch_frames = 256
    c.block_samples = 7000  # several blocks per haystack, not a multiple of the hop
    c.max_duration_s = ml_collections.ConfigDict(dict.fromkeys(c.models, 0.0))
  return c
