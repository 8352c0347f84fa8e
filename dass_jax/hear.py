"""The HEAR 2021 API (hear-eval-kit, hear-validator) for any dass-jax checkpoint.

    python -m heareval.embeddings.runner dass_jax.hear --model dass-small-47.2 --tasks-dir TASKS

    from dass_jax import hear
    model = hear.load_model("work_dirs/my_sounds/export")   # a torch.nn.Module (the kit's check)
    scene = hear.get_scene_embeddings(audio, model)          # (n_sounds, D) float32 torch tensor
    frames, times = hear.get_timestamp_embeddings(audio, model)
    # frames (n_sounds, T, D) float32, times (n_sounds, T) ms, the same row for every sound

`audio` is a (n_sounds, n_samples) float torch tensor at `model.sample_rate` (16 kHz), the sounds
of a batch as the kit gives them: zero-padded at the end to one length. The embeddings are those of
`dass_jax.embed.Embedder` on the whole padded batch (the padding is part of each sound, as in every
HEAR model): the scene embedding is the mean-pooled last hidden state, the timestamp embeddings its
time tokens (averaged over frequency), both of the model's width (`scene_embedding_size` =
`timestamp_embedding_size`), stamped at token centres (DASS every 320 ms, AST about 100 ms, AuM
160 ms, Dasheng 40 ms; the kit's event tasks ask for 50 ms or finer, which only Dasheng gives).
The model runs in JAX on JAX's default device; the tensors come back on the device of `audio`.

The kit accepts only `torch.nn.Module` (or `tf.Module`) models, so `load_model` returns a thin
torch wrapper (`dass_jax.hear_torch.HearModel`, the [torch] extra); this module imports torch only
there, so it imports without torch.
"""

from __future__ import annotations

DEFAULT_CHECKPOINT = "dass-small-47.2"


def load_model(model_file_path: str = "", **embedder_options):
  """The HEAR model of a checkpoint folder, a training export or a published name (default
  dass-small-47.2, converted on first use)."""
  from dass_jax.embed import Embedder
  from dass_jax.hear_torch import HearModel

  return HearModel(
    Embedder.from_checkpoint(model_file_path or DEFAULT_CHECKPOINT, **embedder_options)
  )


def get_timestamp_embeddings(audio, model):
  """(n_sounds, n_samples) audio -> ((n_sounds, T, D) float32, (n_sounds, T) ms) torch tensors."""
  return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio, model):
  """(n_sounds, n_samples) audio -> (n_sounds, D) float32 torch tensor."""
  return model.scene_embeddings(audio)
