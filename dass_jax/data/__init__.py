"""Input pipeline: AST/DASS datafiles -> augmented, normalised fbank batches (grain).

Datafile format (as AST/DASS): a JSON file `{"data": [{"wav": path, "labels": "/m/a,/m/b"}, ...]}`
(relative wav paths resolve against the datafile's folder) and a label CSV with the header
`index,mid,display_name`.

Batches are numpy dicts (b = per-host batch size, t = cfg.target_frames, c = classes):

  fbank:  (b, t, 128) float32, normalised as AST: (x + 4.2677393) / (2 * 4.5689974).
  labels: (b, c) float32 multi-hot (mixed by lambda when mixup is on).
  index:  (b,) int32, datafile row of each example (-1 for eval padding), for looking up cached
          teacher logits.
  mask:   (b,) float32, eval only: 1 for real examples, 0 for padding and unreadable files.
  waveform: (b, samples) float32, only with cfg.waveform: the audio each fbank row was made from
          (after mixup, before SpecAugment and noise, which act on the fbank), cropped or
          zero-padded to the samples the target_frames frames span ((t - 1) * 160 + 400 at
          16 kHz), for a model that takes waveforms (Dasheng, as student or teacher);
          `request_inputs(cfg, kinds)` turns it on exactly when one of the models does.

Config fields (an `ml_collections.ConfigDict` section; `default_config()` has them all; a field
left out of the section takes its default):

  datafile:       JSON datafile (train or eval).
  label_csv:      class_labels_indices.csv.
  target_frames:  fbank frames per clip (1024 for 10 s); shorter clips are zero-padded at the end,
                  longer ones cropped.
  batch_size:     examples per batch on this host.
  num_workers:    worker processes decoding audio (0 = in the main process, with threads).
  read_threads:   threads per process reading batches (grain ReadOptions.num_threads).
  num_epochs:     training epochs; None repeats forever.
  freqm:          max frequency-mask width in mel bins (AST: 48; 0 disables; at most 64).
  timem:          max time-mask width in frames at 1024 frames (AST: 192; scaled by
                  target_frames / 1024, so it masks the same share of any clip; 0 disables; at
                  most 512, half the clip).
  mixup:          probability of waveform mixup per example (AST: 0.5; 0 disables).
  noise:          add AST's noise + time-roll augmentation.
  waveform:       also return the "waveform" batch entry (above).
  cache_fbank:    keep each training clip's fbank in memory after its first use, so that later
                  epochs skip decoding and feature extraction for clips without mixup (small
                  datasets only: 800 clips of 1 s take 40 MB per process; batches are the same).
  weights_file:   per-example sampling weights (CSV, one per datafile row, written by
                  `python -m dass_jax.data.balanced`); empty = uniform shuffling.
  sample_rate:    audio sample rate in Hz (16000).
  source:         'datafile' (default) or 'tfds' (then tfds_name, tfds_split, tfds_data_dir name
                  an ArrayRecord-backed TFDS dataset; see `dass_jax.data.tfds_source`).

Usage::

  from dass_jax import data

  cfg = data.default_config()
  cfg.datafile, cfg.label_csv = "train.json", "class_labels_indices.csv"
  cfg.target_frames, cfg.batch_size, cfg.num_workers = 1024, 12, 4
  it = data.make_train_iterator(cfg, seed=0)   # shards by jax.process_index() by default
  batch = next(it)                             # {"fbank", "labels", "index"}
  it.num_skipped                               # unreadable files skipped so far (log it)
  it.steps_per_epoch                           # batches per epoch on this host

  # Resume exactly: save the iterator with the model state (orbax), restore into a fresh one.
  import grain, orbax.checkpoint as ocp
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=grain.checkpoint.CheckpointSave(it)))
  it = data.make_train_iterator(cfg, seed=0)
  mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                             data=grain.checkpoint.CheckpointRestore(it)))
  # (or it.get_state() / it.set_state(state) directly: {"next_batch": int, "num_skipped": int};
  # a state restores with any num_workers.)
  it.close()                                   # stops worker processes (num_workers > 0)

  eval_cfg = data.default_config(datafile="eval.json", label_csv=..., batch_size=12)
  for batch in data.make_eval_iterator(eval_cfg):  # one pass, padded final batch
    ...                                          # weight metrics by batch["mask"]

  data.num_classes_from_csv("class_labels_indices.csv")
  data.label_prior(cfg)                        # (classes,) positive rate of the training draws

  # A small synthetic multi-label dataset in the same format (written once, then cached):
  from dass_jax.data import synthetic
  ds = synthetic.ensure_dataset()  # .train_datafile, .eval_datafile, .label_csv, .num_classes

With num_workers > 0, grain starts worker processes with the 'spawn' method, which re-imports the
launching script: guard its entry point with `if __name__ == "__main__":`. Unreadable audio is
never fatal: in training the clip is replaced by another random row, in evaluation it gets mask 0;
both are logged (logging.warning, naming the file) and counted in `it.num_skipped`.
"""

from dass_jax.data.datafile import num_classes_from_csv, read_datafile
from dass_jax.data.pipeline import (
  DataIterator,
  default_config,
  label_prior,
  make_eval_iterator,
  make_train_iterator,
  num_examples,
  request_inputs,
)
from dass_jax.labels import read_label_csv

__all__ = [
  "DataIterator",
  "default_config",
  "label_prior",
  "make_eval_iterator",
  "make_train_iterator",
  "num_classes_from_csv",
  "num_examples",
  "read_datafile",
  "read_label_csv",
  "request_inputs",
]
