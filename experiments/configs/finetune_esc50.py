r"""Fine-tunes a converted DASS (or AST, AuM) checkpoint on an ESC-50-style single-label dataset.

    python -m experiments.train \
      --config experiments/configs/finetune_esc50.py \
      --workdir /exp/dass_esc50_fold1 \
      --config.init_from=/models/dass_small_converted \
      --config.input.datafile=/data/esc50/esc_train_data_1.json \
      --config.evals.input.datafile=/data/esc50/esc_eval_data_1.json \
      --config.input.label_csv=/data/esc50/esc_class_labels_indices.csv \
      --config.evals.input.label_csv=/data/esc50/esc_class_labels_indices.csv

Datafiles in the AST format, one label per clip (5 s clips: 512 frames). The AudioSet classifier
head is replaced by a freshly initialised one for the new classes; loss is softmax cross-entropy;
evaluation reports top-1 accuracy beside mAP. Hyperparameters follow AST's ESC-50 recipe
(`egs/esc50/run_esc.sh`, AudioSet-pretrained start): lr 1e-5, batch 48, 25 epochs, lr x0.85 every
epoch from epoch 5, freqm 24, timem 96 frames of its 512 (here timem=192: the pipeline takes timem
at 1024 frames and scales it to target_frames), mixup 0; no teacher, no weight averaging.
For AST or AuM checkpoints the position embeddings are resized to the clips' 512 frames when the
checkpoint is loaded (`experiments.train` sets max_length to input.target_frames for a fixed-length
init_from; the registry's `with_max_length`). `experiments/configs/own_data.py` is the same
fine-tuning on datafiles written by `python -m dass_jax.prepare` (ESC-50 included).
"""

from experiments.configs import common


def get_config(arg=None):
  common.parse_arg(arg)
  c = common.base_config()
  c.init_from = ""  # required: a converted checkpoint folder
  c.reinit_head = True
  c.batch_size = 48
  c.num_epochs = 25
  c.input.target_frames = 512
  c.input.freqm, c.input.timem, c.input.mixup = 24, 192, 0.0  # timem at 1024 frames: 96 of 512
  c.input.num_workers = 4
  c.evals.input.target_frames = 512
  c.evals.batch_size = 48
  c.loss.label_kind = "ce"
  c.teacher.path = ""
  c.optim.lr = 1e-5
  c.optim.warmup_steps = 100
  c.optim.warmup_update_every = 1
  c.optim.decay_start, c.optim.decay_every, c.optim.decay_rate = 5, 1, 0.85
  c.wa_start = c.wa_end = 0
  c.log_every_steps = 20
  c.checkpoint_every_steps = 500
  return c
