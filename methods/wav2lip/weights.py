"""Known Wav2Lip weight files (bench.weights style). Never downloaded; users place them in the weights folder.

sha256 values: `wav2lip_gan.pth` is pinned to the digest that many independent projects record for
the official file (e.g. download scripts that fetch it from the authors' SharePoint link). For
`wav2lip.pth` no digest could be found, and for `lipsync_expert.pth` only a single third-party list
gives one (9b9936c7...93be5), too thin to reject a user's file on; both stay None, and the digest
of whatever file is used goes into the run manifest (FitReport.weights).
"""

from __future__ import annotations

from bench.weights import WeightSpec

_SOURCE = ("the 'Getting the weights' links of https://github.com/Rudrabha/Wav2Lip "
           "(README at commit 5c90fa9)")
_LICENCE = "Wav2Lip licence: non-commercial research and personal use only"

WAV2LIP = WeightSpec(
    name="wav2lip",
    filename="wav2lip.pth",
    description="official Wav2Lip generator (trained without the visual-quality discriminator)",
    source=_SOURCE,
    licence=_LICENCE,
    sha256=None,
)

WAV2LIP_GAN = WeightSpec(
    name="wav2lip_gan",
    filename="wav2lip_gan.pth",
    description="official Wav2Lip + GAN generator (trained with the visual-quality discriminator)",
    source=_SOURCE,
    licence=_LICENCE,
    sha256="ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8",
)

LIPSYNC_EXPERT = WeightSpec(
    name="lipsync_expert",
    filename="lipsync_expert.pth",
    description="official Wav2Lip expert lip-sync discriminator (SyncNet_color)",
    source=_SOURCE,
    licence=_LICENCE,
    sha256=None,
)

WEIGHTS: dict[str, WeightSpec] = {s.name: s for s in (WAV2LIP, WAV2LIP_GAN, LIPSYNC_EXPERT)}


def generator_spec(gan: bool) -> WeightSpec:
    return WAV2LIP_GAN if gan else WAV2LIP
