"""LFCC-LCNN: the light CNN + BLSTM baseline of ASVspoof 2021 (LA/DF), on ``lfcc``.

Written after reading the structure of Xin Wang's baseline (``project-NN-Pytorch-scripts``,
``asvspoof-challenge/2021`` ``LA/Baseline-LFCC-LCNN/project/baseline_LA/model.py``); no code
was copied. Input: 60 LFCC dims (20 coefficients + deltas + delta-deltas, 10 ms hop) as a
one-channel image ``(1, frames, 60)``.

Light CNN (MFM = max-feature-map, halving channels; BN without affine parameters, as in the
baseline)::

    conv 5x5   1->64, MFM 32, maxpool 2x2
    conv 1x1  32->64, MFM 32, BN | conv 3x3 32->96,  MFM 48, maxpool 2x2, BN
    conv 1x1  48->96, MFM 48, BN | conv 3x3 48->128, MFM 64, maxpool 2x2
    conv 1x1 64->128, MFM 64, BN | conv 3x3 64->64,  MFM 32, BN
    conv 1x1  32->64, MFM 32, BN | conv 3x3 32->64,  MFM 32, maxpool 2x2
    dropout 0.7

giving ``(32 channels, frames // 16, 60 // 16 = 3)`` -> 96 features per frame -> two BLSTM
layers (48 units per direction) -> residual sum with their input -> average over time ->
linear. Differences from the baseline, by choice:

* 2 logits + cross-entropy (class 1 = bona fide) instead of one sigmoid output + BCE; the
  score ``logit1 - logit0`` plays the role of the baseline's pre-sigmoid activation;
* MFM pairs adjacent channels ``(2i, 2i+1)`` (shared :func:`~trainer.models.maxout.maxout`),
  the baseline pairs channel ``i`` with ``i + C/2``: the same family, up to a permutation of
  the preceding convolution's filters;
* training uses random crops of ``train_frames = 400`` frames (4 s) instead of whole
  utterances in length-sorted batches: a fixed crop batches without padding (padding would
  leak into the time average); scoring uses whole utterances (``eval_window = None``), as
  the baseline does. Inputs shorter than 16 frames are wrapped (repeated) to 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.models.maxout import Maxout
from trainer.models.pooling import MaxPool2d
from trainer.models.registry import (
    CountermeasureModel,
    ModelConfigError,
    feature_channels,
    mgd_nyquist,
)

MIN_FRAMES = 16
"""Four 2x2 poolings need at least 16 frames."""


def _mfm_conv(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), Maxout(1)]


def _bn(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=False)


class LCNN(CountermeasureModel):
    """LFCC-LCNN countermeasure (see the module docstring).

    Parameters
    ----------
    n_bins : int, default 60
        LFCC dimensions (>= 16).
    dropout : float, default 0.7
        Dropout after the convolutional part.
    train_frames : int, default 400
        Default training crop (frames).
    features : sequence of str, default ("lfcc",)
        Store features read, one input channel each, all with ``n_bins`` bins (``("mgd",)``,
        ``("mgd", "logmel")``); MGD's Nyquist bin is left out (257 store bins -> 256).

    Examples
    --------
    >>> model = LCNN().eval()
    >>> model(lfcc=torch.randn(2, 100, 60)).shape
    torch.Size([2, 2])
    """

    inference_memory_format = torch.channels_last  # oneDNN: 10.2 -> 6.9 ms per utterance

    def __init__(
        self,
        n_bins: int = 60,
        dropout: float = 0.7,
        train_frames: int = 400,
        features: Sequence[str] = ("lfcc",),
    ):
        super().__init__()
        if n_bins < 16 or not 0 <= dropout < 1 or train_frames < MIN_FRAMES:
            raise ModelConfigError(
                f"LCNN: need n_bins >= 16, 0 <= dropout < 1, train_frames >= {MIN_FRAMES}; "
                f"got {n_bins}, {dropout}, {train_frames}"
            )
        self.features = feature_channels("LCNN", features)
        self.n_bins = dict.fromkeys(self.features, n_bins)
        self.unused_bins = mgd_nyquist(self.features)
        self.train_frames = train_frames
        self.eval_window = None
        self.eval_hop = None
        self.min_frames = MIN_FRAMES
        pool = MaxPool2d(2)
        self.cnn = nn.Sequential(
            *_mfm_conv(len(self.features), 64, 5), pool,
            *_mfm_conv(32, 64, 1), _bn(32), *_mfm_conv(32, 96, 3), pool, _bn(48),
            *_mfm_conv(48, 96, 1), _bn(48), *_mfm_conv(48, 128, 3), pool,
            *_mfm_conv(64, 128, 1), _bn(64), *_mfm_conv(64, 64, 3), _bn(32),
            *_mfm_conv(32, 64, 1), _bn(32), *_mfm_conv(32, 64, 3), pool,
            nn.Dropout(dropout),
        )  # fmt: skip
        dim = 32 * (n_bins // 16)
        self.blstm = nn.LSTM(dim, dim // 2, num_layers=2, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(dim, 2)

    @property
    def embedding_dim(self) -> int:
        """Width of :meth:`embed`'s output: ``32 * (n_bins // 16)`` (96 for 60 LFCC dims)."""
        return self.classifier.in_features

    def embed(self, **features: torch.Tensor) -> torch.Tensor:
        """Utterance embedding ``(B, embedding_dim)``: the time average the classifier reads.

        The BLSTM output plus its input (the residual sum), averaged over time: the
        penultimate layer, so ``forward(**x) == classifier(embed(**x))``.
        """
        x = torch.stack(self.inputs(features), dim=1)  # (B, channels, frames, n_bins)
        h = self.cnn(x)  # (B, 32, frames // 16, n_bins // 16)
        h = h.permute(0, 2, 1, 3).flatten(2)  # (B, frames // 16, 32 * (n_bins // 16))
        out, _ = self.blstm(h)
        return (out + h).mean(dim=1)

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 2)`` from ``lfcc=(B, n_frames, n_bins)`` (class 1 = bona fide)."""
        return self.classifier(self.embed(**features))
