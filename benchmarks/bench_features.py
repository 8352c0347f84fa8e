"""Feature extraction speed: milliseconds per minute of audio for each path.

    JAX_PLATFORMS=cpu python benchmarks/bench_features.py [--repeats 5]

Rows:
  numpy fbank            kaldi_fbank.fbank on one 60 s waveform (16 kHz).
  jax fbank_batch 6x10s  kaldi_fbank.fbank_batch on a (6, 160000) batch (jit, compile
                         excluded).
  jax fbank_batch 1x60s  the same on one 60 s waveform.
  file 44.1k -> features kaldi_fbank.audio_features on a 60 s 44.1 kHz stereo WAV
                         (streamed decode, downmix, soxr resample, fbank, normalise).
Each time is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np
import soundfile as sf
from timing import median_seconds  # benchmarks/timing.py, beside this script

from dass_jax.frontends import kaldi_fbank


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  minute = (0.1 * rng.standard_normal(60 * 16000)).astype(np.float32)
  batch = minute.reshape(6, 160000)

  rows = [("numpy fbank", 60.0, lambda: kaldi_fbank.fbank(minute))]
  jax_batch = jax.device_put(batch)
  jax_minute = jax.device_put(minute[None])
  kaldi_fbank.fbank_batch(jax_batch).block_until_ready()
  kaldi_fbank.fbank_batch(jax_minute).block_until_ready()
  rows.append(
    ("jax fbank_batch 6x10s", 60.0, lambda: kaldi_fbank.fbank_batch(jax_batch).block_until_ready())
  )
  rows.append(
    ("jax fbank_batch 1x60s", 60.0, lambda: kaldi_fbank.fbank_batch(jax_minute).block_until_ready())
  )

  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "minute_44k.wav")
    stereo = (0.1 * rng.standard_normal((60 * 44100, 2))).astype(np.float32)
    sf.write(path, stereo, 44100, subtype="PCM_16")
    kaldi_fbank.audio_features(path)  # warm caches (mel banks, librosa/soxr import).
    rows.append(("file 44.1k -> features", 60.0, lambda: kaldi_fbank.audio_features(path)))
    results = [(name, seconds, median_seconds(fn, args.repeats)) for name, seconds, fn in rows]

  print(f"backend: {jax.default_backend()}, cpus: {os.cpu_count()}, repeats: {args.repeats}")
  print(f"{'path':<24} {'ms / min audio':>15} {'x realtime':>11}")
  for name, seconds, elapsed in results:
    per_minute = elapsed * 1000.0 * 60.0 / seconds
    print(f"{name:<24} {per_minute:>15.1f} {seconds / elapsed:>11.0f}")


if __name__ == "__main__":
  main()
