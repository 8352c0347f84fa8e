"""Constants of the audio front ends and the AudioSet label space, defined once for the package."""

# Audio sample rate every model here is trained on (AST, DASS, AuM, Dasheng), in Hz.
SAMPLE_RATE = 16000
# Kaldi fbank frames: 25 ms windows every 10 ms, so 100 frames per second of audio.
FRAMES_PER_SECOND = 100
# Mel bins of the Kaldi fbank that AST, DASS and AuM take.
NUM_MEL_BINS = 128
# Fbank normalisation of AST/DASS on AudioSet: (x - mean) / (2 * std).
AUDIOSET_FBANK_MEAN = -4.2677393
AUDIOSET_FBANK_STD = 4.5689974
# Classes of the AudioSet ontology (dass_jax/assets/class_labels_indices.csv).
AUDIOSET_NUM_CLASSES = 527
