"""Published checkpoints by name: where each one lives and what its authors report for it.

    python -m convert_torch dass dass-small-47.2 converted/dass_small   # = hf://saurabhati/…
    python -m convert_torch --list                                       # this table
    model, params, config = dass_jax.load_model("dass-small-47.2")      # converted once, cached

Each name maps to a hub id or a URL (`convert_torch.sources` fetches and verifies it) and to the
converter that reads it. `reported` is the authors' number as published (model card, README,
paper, or the number in the repository's name where that is all there is); nothing here was
measured by this project. No file sizes or hashes are recorded: none is published for these files
in a place that could be read. The hub's own hashes and the server's Content-Length are checked
instead (`convert_torch.sources`); pin a URL with `#sha256=HEX` to check more.

Google Drive (AuM): Drive answers large files with a confirmation page. The direct-download link
with the confirmation given is tried; should Drive still send a page, the fetch fails with a
message and the file must be downloaded in a browser and passed as a local file.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PublishedModel:
  """One published checkpoint.

  Attributes:
    name: the short name accepted by the converters and `dass_jax.load_model`.
    converter: the `python -m convert_torch` subcommand that reads it.
    source: `hf://OWNER/NAME` or an `https://` URL.
    reported: the authors' figure (metric and data set) for it, "-" for encoders without one.
    origin: where the source and the figure are published.
    size, sha256: expected bytes and sha256 of a URL's file, when published (none are yet).
    filename: the file name to store a URL's download under when the URL does not end in it.
  """

  name: str
  converter: str
  source: str
  reported: str
  origin: str
  size: int | None = None
  sha256: str | None = None
  filename: str | None = None


_DASS_README = "authors' README (Saurabhbhati/DASS)"
_DASS_CARD = "hub model card"
_AST_NAME = "the repository's name (MIT fine-tunes of the AST paper)"
_ZENODO = "Dasheng README (RicherMans/Dasheng), Zenodo"
_AUM = "AuM README (kaistmm/Audio-Mamba-AuM), Google Drive"
_VMAMBA = "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/"
_DRIVE = "https://drive.google.com/file/d/{}/view"

MODELS: tuple[PublishedModel, ...] = (
  PublishedModel(
    "dass-small-47.2",
    "dass",
    "hf://saurabhati/DASS_small_AudioSet_47.2",
    "AudioSet mAP 47.2",
    f"{_DASS_CARD}; the paper's DASS-small (AST teacher)",
  ),
  PublishedModel(
    "dass-small-48.6",
    "dass",
    "hf://saurabhati/DASS_small_AudioSet_48.6",
    "AudioSet mAP 48.6",
    f"{_DASS_CARD}; DASSv2 (AST + HTS-AT teachers)",
  ),
  PublishedModel(
    "dass-small-48.9",
    "dass",
    "hf://saurabhati/DASS_small_AudioSet_48.9",
    "48.9 (in the repository's name)",
    f"linked from the {_DASS_README}, 2024 versions",
  ),
  PublishedModel(
    "dass-small-50.1",
    "dass",
    "hf://saurabhati/DASS_small_AudioSet_50.1",
    "AudioSet mAP 50.1",
    f"{_DASS_CARD}; DASSv3 (SSLAM teacher)",
  ),
  PublishedModel(
    "dass-medium-50.2",
    "dass",
    "hf://saurabhati/DASS_medium_AudioSet_50.2",
    "AudioSet mAP 50.2",
    f"{_DASS_CARD}, linked from the {_DASS_README}; DASSv3 (SSLAM teacher)",
  ),
  PublishedModel(
    "dass-medium-48.9",
    "dass",
    "https://github.com/Saurabhbhati/DASS/releases/download/v0.2/DASS_medium_v2.pth",
    "AudioSet mAP 48.9",
    f"GitHub release v0.2 of Saurabhbhati/DASS; figure from the {_DASS_README} (DASSv2)",
  ),
  *(
    PublishedModel(
      f"ast-audioset-{variant}",
      "ast",
      f"hf://MIT/ast-finetuned-audioset-{variant}",
      f"AudioSet mAP {reported}",
      _AST_NAME,
    )
    for variant, reported in (
      ("10-10-0.4593", "45.93"),
      ("10-10-0.450", "45.0"),
      ("10-10-0.448", "44.8"),
      ("10-10-0.448-v2", "44.8"),
      ("12-12-0.447", "44.7"),
      ("14-14-0.443", "44.3"),
      ("16-16-0.442", "44.2"),
    )
  ),
  PublishedModel(
    "ast-speech-commands-v2",
    "ast",
    "hf://MIT/ast-finetuned-speech-commands-v2",
    "Speech Commands V2 accuracy 98.1 %",
    "AST paper (arXiv 2104.01778)",
  ),
  PublishedModel(
    "ast-audioset-10-10-0.4593-pth",
    "ast",
    "https://www.dropbox.com/s/cv4knew8mvbrnvq/audioset_0.4593.pth?dl=1",
    "AudioSet mAP 45.93",
    "the AST authors' original .pth (DASS's teacher, as its ast_models.py downloads it)",
    filename="audioset_10_10_0.4593.pth",
  ),
  *(
    PublishedModel(
      f"dasheng-{size}",
      "dasheng",
      f"hf://mispeech/dasheng-{hub}",
      "- (encoder)",
      "Dasheng README (RicherMans/Dasheng), hub",
    )
    for size, hub in (("base", "base"), ("0.6b", "0.6B"), ("1.2b", "1.2B"))
  ),
  *(
    PublishedModel(
      f"dasheng-{size}-pt",
      "dasheng",
      f"https://zenodo.org/records/11511780/files/dasheng_{file}.pt?download=1",
      "- (encoder)",
      _ZENODO,
      filename=f"dasheng_{file}.pt",
    )
    for size, file in (("base", "base"), ("0.6b", "06b"), ("1.2b", "12b"))
  ),
  PublishedModel(
    "dasheng-audioset-49.7",
    "dasheng",
    "https://zenodo.org/records/13315686/files/dasheng_audioset_mAP497.pt?download=1",
    "AudioSet mAP 49.7",
    f"{_ZENODO} (base encoder + AudioSet head)",
    filename="dasheng_audioset_mAP497.pt",
  ),
  PublishedModel(
    "aum-base-audioset-32.7",
    "aum",
    _DRIVE.format("1QgnyvGYxKd-q6twXf4i05jZA5xFIFs8j"),
    "AudioSet mAP 32.74",
    f"{_AUM}; base Fo-Bi, trained from scratch",
  ),
  PublishedModel(
    "aum-small-audioset-39.7",
    "aum",
    _DRIVE.format("1z-JdZTy52gW7RzhiTQozn6Ly2W4DOs9b"),
    "AudioSet mAP 39.74",
    f"{_AUM}; small Bi-Bi, ImageNet initialisation",
  ),
  PublishedModel(
    "sslam-as2m-50.2",
    "sslam",
    "hf://ta012/SSLAM_AS2M_Finetuned",
    "AudioSet mAP 50.2",
    "SSLAM README (ta012/SSLAM), hub; the DASS v3 teacher. The authors' fairseq file is in a "
    "Google Drive folder (no file URL): pass it as a local file",
  ),
  PublishedModel(
    "vmamba-tiny-s1l8",
    "vmamba",
    _VMAMBA + "vssm1_tiny_0230s_ckpt_epoch_264.pth",
    "ImageNet-1K top-1 82.6",
    "VMamba README; DASS-small's ImageNet initialisation in the DASS code",
  ),
  PublishedModel(
    "vmamba-small-s1l20",
    "vmamba",
    _VMAMBA + "vssm1_small_0229s_ckpt_epoch_240.pth",
    "-",
    "DASS-medium's ImageNet initialisation in the DASS code (Saurabhbhati/DASS ast_models.py)",
  ),
)
BY_NAME = {model.name: model for model in MODELS}
BY_SOURCE = {model.source: model for model in MODELS}
# The notebooks' default: the paper's DASS-small.
DEFAULT_DASS = "dass-small-47.2"


def find(name_or_source: str) -> PublishedModel | None:
  """The published model with this short name or exactly this source, else None."""
  return BY_NAME.get(name_or_source) or BY_SOURCE.get(name_or_source)


def format_table() -> str:
  """The table as aligned text (`python -m convert_torch --list`)."""
  rows = [("name", "converter", "reported", "source")]
  rows += [(m.name, m.converter, m.reported, m.source) for m in MODELS]
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  return "\n".join(
    "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
    for row in rows
  )
