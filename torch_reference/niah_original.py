"""Torch twin of the DASS authors' needle-in-a-haystack input assembly, for parity tests.

Written from reading `src/dataloader_niah.py` (`AudiosetNIAHDataset.__getitem__`) and
`src/run_NIAH.py` (the concatenation in `validate`) of the authors' repository; the steps and
their order follow those files, in torch float32 as they run. Two stand-ins, since neither is
installable here:
  * torchaudio.compliance.kaldi.fbank -> `kaldi_fbank`: kaldi_native_fbank (Kaldi's C++
    compute-fbank-feats, float32) with the AST/DASS options; like torchaudio it refuses a
    waveform shorter than one 400-sample window.
  * torch.randn(1, n) -> a caller-given `white(n)` returning (1, n) samples, so that a test can
    feed the same seeded noise to this twin and to `experiments.haystack`.
The babble recording is given as a (1, samples) tensor instead of being read from
'../babble_all.wav'.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dass_jax.constants import AUDIOSET_FBANK_MEAN, AUDIOSET_FBANK_STD, NUM_MEL_BINS, SAMPLE_RATE

CHUNK_SAMPLES = 400 * SAMPLE_RATE


def kaldi_fbank(waveform: torch.Tensor) -> torch.Tensor:
  """(1, samples) float32 -> (frames, 128) float32 log-mel, the AST/DASS torchaudio call."""
  import kaldi_native_fbank as knf

  if waveform.shape[1] < 400:
    raise AssertionError(f"choose a window size 400 that is [2, {waveform.shape[1]}]")
  opts = knf.FbankOptions()
  opts.frame_opts.dither = 0.0
  opts.frame_opts.window_type = "hanning"
  opts.frame_opts.samp_freq = SAMPLE_RATE
  opts.frame_opts.snip_edges = True
  opts.mel_opts.num_bins = NUM_MEL_BINS
  opts.mel_opts.low_freq = 20.0
  opts.mel_opts.high_freq = 0.0
  opts.use_energy = False
  computer = knf.OnlineFbank(opts)
  computer.accept_waveform(SAMPLE_RATE, waveform[0].numpy().astype(np.float32))
  computer.input_finished()
  frames = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
  return torch.from_numpy(np.asarray(frames, np.float32).reshape(-1, NUM_MEL_BINS))


def dataset_item(
  waveform_ori: torch.Tensor,
  target_length: int,
  max_length: int,
  use_noise: bool,
  noise_type: str = "white",
  snr_db: float = 10.0,
  white: Callable[[int], torch.Tensor] | None = None,
  babble: torch.Tensor | None = None,
  mean: float = AUDIOSET_FBANK_MEAN,
  std: float = AUDIOSET_FBANK_STD,
  fbank_fn: Callable[[torch.Tensor], torch.Tensor] = kaldi_fbank,
) -> tuple[torch.Tensor, torch.Tensor]:
  """(normalised needle fbank (target_length, 128), normalised haystack (<= max_length -
  target_length, 128)) of one clip, as the original NIAH dataset returns them (labels left out).

  Args:
    waveform_ori: (1, samples) float32 clip at 16 kHz.
    target_length: the needle's frame count (the original's audio_length, 1024).
    max_length: the input length L (the original's input_max_len).
    use_noise: False for the zeros haystack.
    noise_type: 'white' or 'babble'.
    snr_db: the original's niah_noise_snr.
    white: n -> (1, n) noise standing in for torch.randn(1, n).
    babble: (1, samples) recording standing in for babble_all.wav.
    mean, std: the dataset normalisation.
    fbank_fn: the Kaldi fbank.
  """
  waveform = waveform_ori - waveform_ori.mean()
  fbank = fbank_fn(waveform)
  downsampling_ratio = waveform.shape[1] / fbank.shape[0]
  p = target_length - fbank.shape[0]
  if p > 0:
    fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank)
  elif p < 0:
    fbank = fbank[0:target_length, :]
  fbank = (fbank - mean) / (std * 2)
  if not use_noise:
    return fbank, torch.zeros(max_length - target_length, NUM_MEL_BINS)
  noise_len = int(downsampling_ratio * (max_length - target_length)) + 1
  if noise_type == "white":
    noise_wav = white(noise_len)
  elif noise_type == "babble":
    noise_wav = babble
    if noise_len > noise_wav.shape[1]:
      ratio = int(np.ceil(noise_len / noise_wav.shape[1]))
      noise_wav = torch.cat([noise_wav, noise_wav], dim=1)
      noise_wav = noise_wav.repeat(1, ratio)
    noise_wav = noise_wav[:, :noise_len]
  else:
    raise ValueError(f"noise type {noise_type!r} not supported")
  clean_rms = torch.sqrt(torch.mean(waveform_ori**2, axis=-1))
  noise_rms = torch.sqrt(torch.mean(noise_wav**2, axis=-1))
  adjusted_noise_rms = clean_rms / (10 ** (snr_db / 20))
  adjusted = noise_wav * (adjusted_noise_rms / noise_rms)
  adjusted = adjusted - adjusted.mean()
  if adjusted.shape[1] < CHUNK_SAMPLES:
    fbank_noise = fbank_fn(adjusted)
  else:
    chunks = [
      fbank_fn(adjusted[:, i : i + CHUNK_SAMPLES])
      for i in range(0, adjusted.shape[1], CHUNK_SAMPLES)
    ]
    fbank_noise = torch.cat(chunks, dim=0)
  if fbank_noise.shape[0] > max_length - target_length:
    fbank_noise = fbank_noise[: max_length - target_length, :]
  return fbank, (fbank_noise - mean) / (std * 2)


def model_input(
  fbank: torch.Tensor, fbank_noise: torch.Tensor, max_length: int, tstep: float
) -> torch.Tensor:
  """run_NIAH's input for a batch: (batch, frames, 128) needle and haystack -> (batch, L, 128).

  Where the needle would end past max_length the original assigns a float index and torch
  raises TypeError on the slice; this twin does the same.
  """
  audio_length = fbank.shape[1]
  ind = int(max_length * tstep)
  if ind + audio_length > max_length:
    ind = max_length - tstep
  return torch.cat((fbank_noise[:, :ind, :], fbank, fbank_noise[:, ind:, :]), dim=1)
