"""Audio front ends: turn audio into what a model takes.

kaldi_fbank   Kaldi-compatible log-mel fbank of AST / DASS (128 bins, 10 ms), streamed for
              recordings of any length, and its AudioSet normalisation
dasheng_mel   Dasheng's 64-bin log-mel power spectrogram in dB (torchaudio MelSpectrogram +
              AmplitudeToDB) and its inference BatchNorm
"""
