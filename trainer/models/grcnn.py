"""Dual-stream gated recurrent convolutional neural network (GRCNN).

After Gomez-Alanis, Peinado, Gonzalez and Gomez, "A Gated Recurrent Convolutional Neural
Network for Robust Spoofing Detection" (IEEE/ACM TASLP 27(12), 2019) and their light
convolutional gated recurrent network of Interspeech 2019, as reimplemented for ASVspoof 2019
LA: one stream on MGD, one on log-mel (256 bins each; the data layer drops MGD's 257th bin).

The architecture as implemented here (every choice the published description leaves open is
marked *chosen*):

Windows
    A stream's input ``(B, T, 256)`` is cut into ``n_windows = 1 + (T - 32) // 10`` windows
    of 32 frames, step 10 (``T = 256`` gives 23 windows; frames after the last whole window
    are not used). Each window is a one-channel image laid out ``(channel, frequency=256,
    time=32)``. Inputs shorter than 32 frames are *wrapped* (repeated from their first frame)
    to 32 frames (*chosen*, the usual repeat-padding of ASVspoof front ends), so any
    ``T >= 1`` is accepted and longer evaluation inputs simply give more windows.
Recurrence
    Three convolutional GRU cells run over the sequence of windows; the hidden state is a
    feature map. "in->out channels 1->16, 8->32, 16->16" are the convolution widths *before*
    maxout: cell 1 convolves its 1-channel input to 16 maps per gate, maxout over adjacent
    channel pairs halves that to 8 = the state channels of cell 1; cell 2: 8 in, 32 maps,
    16 state channels; cell 3: 16 in, 16 maps, 8 state channels. Kernels 5x5, 3x3, 3x3,
    'same' padding, for both the input and the state convolutions. Per window ``x_t``::

        z = sigmoid(maxout(conv_xz(x_t) + conv_hz(h)))
        r = sigmoid(maxout(conv_xr(x_t) + conv_hr(h)))
        c = tanh(maxout(conv_xc(x_t) + conv_hc(r * h)))
        h = z * h + (1 - z) * c            # Cho et al. / torch.nn.GRU convention

    with ``h = 0`` before the first window; input convolutions carry the biases, state
    convolutions have none (a second bias would be redundant).
Dropout 0.3 "on the gates"
    *Chosen*: dropout on what enters the gate convolutions, in the Keras
    ``ConvLSTM2D(dropout=..., recurrent_dropout=...)`` sense: the input maps of a cell are
    dropped independently per window (before the input-to-gate convolution) and the state
    fed to the state-to-gate convolutions (and to ``r * h``) is multiplied by one mask per
    sequence (variational recurrent dropout); the state carried forward is never dropped.
Pooling
    Max-pooling (2, 1) over frequency is applied to each cell's *output sequence* before it
    enters the next cell, while each cell's own recurrent state keeps its input resolution:
    cell 1 runs at 256 bins, cell 2 at 128, cell 3 at 64, and its pooled last output is
    8 channels x 32 bins x 32 frames = 8192 values.
Embedding and classifier
    The last window's (pooled) cell-3 output -> linear 8192->960 -> maxout pairs (480) ->
    dropout 0.5 is a stream's embedding; the embeddings of the streams are concatenated ->
    linear -> 2 logits (class 1 = bona fide). Single-stream variants use one embedding.

Efficiency (training on CPU is compute bound: ~90% of the FLOPs are convolutions)
    * the input-to-gate convolutions do not depend on the recurrent state, so the three
      gates' input convolutions are one ``3 * width``-channel convolution over many windows
      and batch items at once (windows folded into the batch dimension). On accelerators
      that is all windows in one call. On CPU it is as many windows as keep the output
      within ``CPU_CHUNK_BYTES`` (4 MiB; usually one window of the batch), computed right
      before the recurrence consumes it: measured on the 2-core development machine, one
      oneDNN call over all 23 x 8 windows was 2-4x *slower* per window than cache-sized
      calls (hundreds of MB of gate maps written, re-read by every step and re-written by
      the backward pass), and slower overall than the window-by-window reference;
      ``windows_per_conv`` overrides the choice;
    * on CPU the one-channel input convolution of cell 1 is an explicit im2col + GEMM
      (oneDNN's direct convolution with one input channel, its weight gradient especially,
      ran at a few % of sgemm speed; the GEMM is ~3x faster);
    * per window the z and r state convolutions are one fused ``2 * width``-channel
      convolution; the candidate's ``conv(r * h)`` cannot join it (it needs ``r``);
    * the first window skips the state convolutions (``h = 0``, no bias);
    * maxout is a reshape + ``max`` (:func:`trainer.models.maxout.maxout`); z and r share one
      maxout and one sigmoid; the update is one ``lerp``.
    Channel order of the fused convolutions: ``[z | r | c]`` blocks of ``width`` maps each,
    maxout pairs ``(2i, 2i + 1)`` inside a block. ``bench/bench_grcnn.py`` checks this
    against a window-by-window implementation with separate gate convolutions and times both.

No device or dtype is hard-coded: new tensors follow the input's device and the dtype the
convolutions produce, so the model runs on CPU and CUDA, in float32 and under bf16/fp16
autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainer.models.maxout import maxout
from trainer.models.pooling import max_pool2d
from trainer.models.registry import CountermeasureModel, ModelConfigError

WINDOW = 32
"""Frames per window."""

WINDOW_HOP = 10
"""Frames between the starts of consecutive windows."""

CELLS = ((1, 16, 5), (8, 32, 3), (16, 16, 3))
"""Per cell: (input channels, convolution width before maxout, kernel size)."""

CPU_CHUNK_BYTES = 4 << 20
"""On CPU, an input-to-gate convolution covers as many windows as fit this output size."""


def n_windows(n_frames: int, window: int = WINDOW, hop: int = WINDOW_HOP) -> int:
    """Number of windows the GRCNN cuts ``n_frames`` frames into (after wrapping).

    Parameters
    ----------
    n_frames : int
        Input length (>= 1).
    window, hop : int
        Window length and step in frames.

    Returns
    -------
    int
        ``1 + (max(n_frames, window) - window) // hop``.

    Examples
    --------
    >>> n_windows(256), n_windows(32), n_windows(10), n_windows(41), n_windows(42)
    (23, 1, 1, 1, 2)
    """
    return 1 + (max(n_frames, window) - window) // hop


def frame_windows(x: torch.Tensor, window: int = WINDOW, hop: int = WINDOW_HOP) -> torch.Tensor:
    """Cut ``(B, T, F)`` features into windows ``(n_windows, B, 1, F, window)``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, T, F)`` with ``T >= window``.
    window, hop : int
        Window length and step in frames.

    Returns
    -------
    torch.Tensor
        Window-major one-channel images, frequency before time (contiguous copy).

    Examples
    --------
    >>> frame_windows(torch.zeros(2, 256, 256)).shape
    torch.Size([23, 2, 1, 256, 32])
    """
    w = x.transpose(1, 2).unfold(2, window, hop)  # (B, F, W, window)
    return w.permute(2, 0, 1, 3).unsqueeze(2).contiguous()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``: zero with probability ``p``, the rest scaled by
    ``1 / (1 - p)``; identity when not ``training`` or ``p == 0``.

    The mask comes from ``torch.rand`` (float32 uniforms ``>= p``) instead of ``F.dropout``'s
    ``bernoulli_``, which on the CPU takes twice as long for the GRCNN's windowed cell inputs
    (23 x 4 x 8 x 128 x 32 with its backward: 16 ms against 30-35 ms; 7 % of a training step).
    Seeded by torch's generator like ``F.dropout``, but with other draws.

    Examples
    --------
    >>> x = torch.ones(1000)
    >>> y = dropout(x, 0.25)
    >>> bool(torch.isin(y, torch.tensor([0.0, 1 / 0.75])).all())
    True
    >>> torch.equal(dropout(x, 0.25, training=False), x)
    True
    """
    if not training or p == 0:
        return x
    if not 0 < p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * (keep * (1.0 / (1.0 - p))).to(x.dtype)


class ConvGRUCell(nn.Module):
    """Convolutional GRU with maxout gates, run over a whole sequence of windows.

    Parameters
    ----------
    in_channels : int
        Channels of the input maps.
    width : int
        Convolution outputs per gate before maxout; the state has ``width // 2`` channels.
    kernel_size : int
        Odd square kernel of both the input and the state convolutions ('same' padding).
    dropout : float
        Dropout on the cell's input maps (per window) and on the state entering the gate
        convolutions (one mask per sequence).
    """

    def __init__(self, in_channels: int, width: int, kernel_size: int, dropout: float = 0.3):
        super().__init__()
        if width % 2 or kernel_size % 2 == 0:
            raise ModelConfigError(
                f"ConvGRUCell: width must be even and kernel odd, got {width}, {kernel_size}"
            )
        self.width = width
        self.state_channels = width // 2
        self.chunk: int | None = None
        self.checkpoint_windows = False
        self.dropout = dropout
        pad = kernel_size // 2
        self.input_conv = nn.Conv2d(in_channels, 3 * width, kernel_size, padding=pad)
        self.state_conv = nn.Conv2d(
            self.state_channels, 2 * width, kernel_size, padding=pad, bias=False
        )
        self.candidate_conv = nn.Conv2d(
            self.state_channels, width, kernel_size, padding=pad, bias=False
        )

    def windows_per_conv(self, x: torch.Tensor) -> int:
        """Windows per input-to-gate convolution for ``x`` ``(W, B, C, F, L)``.

        ``self.chunk`` when set; else all windows in one convolution on accelerators, and on
        CPU as many as keep the convolution's output within :data:`CPU_CHUNK_BYTES`.
        """
        n_win, batch, _, n_bins, n_frames = x.shape
        if self.chunk is not None:
            return self.chunk
        if x.device.type != "cpu":
            return n_win
        per_window = batch * 3 * self.width * n_bins * n_frames * 4
        return max(1, CPU_CHUNK_BYTES // per_window)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Input-to-gate pre-activations ``(N, 3 * width, F, L)`` of images ``(N, C, F, L)``.

        One convolution for all gates; on CPU a one-channel input goes through an explicit
        im2col + GEMM instead (oneDNN's direct convolution is slow with a single input
        channel, its weight gradient especially); the result is the same up to rounding.
        """
        conv = self.input_conv
        if conv.in_channels != 1 or x.device.type != "cpu":
            return conv(x)
        n, _, n_bins, n_frames = x.shape
        k = conv.kernel_size[0]
        cols = F.unfold(x, k, padding=k // 2)  # (N, k*k, F*L)
        cols = cols.transpose(0, 1).reshape(k * k, n * n_bins * n_frames)
        gates = torch.addmm(conv.bias.unsqueeze(1), conv.weight.flatten(1), cols)
        return gates.view(-1, n, n_bins, n_frames).transpose(0, 1)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Run over ``x`` ``(W, B, C, F, L)``.

        With ``self.checkpoint_windows`` (training with gradients only) every window is a
        ``torch.utils.checkpoint`` segment: its gate maps are recomputed in the backward pass
        instead of kept, which costs one more forward pass of the cell and leaves only the
        states in memory. Results and gradients are the same either way.

        Returns
        -------
        torch.Tensor
            All states ``(W, B, width // 2, F, L)``, or only the last ``(B, width // 2, F, L)``
            when ``last_only``.
        """
        x = dropout(x, self.dropout, self.training)
        mask = self._state_mask(x)
        if self.checkpoint_windows and self.training and torch.is_grad_enabled():
            steps = self._checkpointed_steps(x)
        else:
            steps = self._chunked_steps(x)
        h = None
        states = []
        for step in steps:
            if mask is not None and h is not None and mask.dtype != h.dtype:
                mask = mask.to(h.dtype)  # bf16 under autocast: as the state is
            h = step(h, mask)
            if not last_only:
                states.append(h)
        return h if last_only else torch.stack(states)

    def _state_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """One dropout mask ``(B, width // 2, F, L)`` of the state per sequence (or None)."""
        if not (self.training and self.dropout > 0):
            return None
        shape = (x.shape[1], self.state_channels, *x.shape[3:])
        return dropout(torch.ones(shape, device=x.device, dtype=x.dtype), self.dropout, True)

    def _chunked_steps(self, x: torch.Tensor):
        """Per window a function ``(h, mask) -> h``; input gates computed chunk by chunk."""
        batch = x.shape[1]
        for chunk in x.split(self.windows_per_conv(x), dim=0):
            gates_x = self.input_gates(chunk.flatten(0, 1))  # all windows of the chunk at once
            for gx in gates_x.split(batch, dim=0):
                yield lambda h, mask, gx=gx: self._advance(gx, h, mask)

    def _checkpointed_steps(self, x: torch.Tensor):
        """Per window a checkpointed function ``(h, mask) -> h`` over the window's input."""
        for window in x:
            yield lambda h, mask, window=window: checkpoint(
                self._window_step, window, h, mask, use_reentrant=False
            )

    def _window_step(
        self, window: torch.Tensor, h: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The state after one window ``(B, C, F, L)`` (input gates included)."""
        return self._advance(self.input_gates(window), h, mask)

    def _advance(
        self, gx: torch.Tensor, h: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The state after a window with input-gate pre-activations ``gx`` (h None: first)."""
        width = self.width
        gx_zr, gx_c = gx.split([2 * width, width], dim=1)
        if h is None:  # h = 0: the state convolutions contribute nothing
            z, _ = torch.sigmoid(maxout(gx_zr)).chunk(2, dim=1)
            return (1 - z) * torch.tanh(maxout(gx_c))
        hd = h if mask is None else h * mask
        z, r = torch.sigmoid(maxout(gx_zr + self.state_conv(hd))).chunk(2, dim=1)
        c = torch.tanh(maxout(gx_c + self.candidate_conv(r * hd)))
        return torch.lerp(c, h, z)  # z * h + (1 - z) * c


class GRCNNStream(nn.Module):
    """One GRCNN stream: windows -> three ConvGRU cells -> last output -> embedding.

    Parameters
    ----------
    n_bins : int
        Feature bins (divisible by ``2 ** len(cells)``).
    window, hop : int
        Window length and step in frames.
    cells : sequence of (int, int, int)
        (input channels, width before maxout, kernel) per cell; the input channels of a cell
        must be the state channels (width // 2) of the one before, and 1 for the first.
    gate_dropout : float
        Dropout of the cells (see :class:`ConvGRUCell`).
    embedding_size : int
        Width of the embedding layer before maxout (the embedding has half as many).
    embedding_dropout : float
        Dropout on the embedding.
    """

    def __init__(
        self,
        n_bins: int = 256,
        window: int = WINDOW,
        hop: int = WINDOW_HOP,
        cells: Sequence[tuple[int, int, int]] = CELLS,
        gate_dropout: float = 0.3,
        embedding_size: int = 960,
        embedding_dropout: float = 0.5,
    ):
        super().__init__()
        if n_bins % (2 ** len(cells)):
            raise ModelConfigError(f"GRCNN: n_bins {n_bins} is not divisible by {2 ** len(cells)}")
        channels = 1
        for in_ch, width, _ in cells:
            if in_ch != channels:
                raise ModelConfigError(f"GRCNN: cell input channels {in_ch} != {channels} expected")
            channels = width // 2
        self.window = window
        self.hop = hop
        self.cells = nn.ModuleList(ConvGRUCell(*c, dropout=gate_dropout) for c in cells)
        flat = channels * (n_bins // 2 ** len(cells)) * window
        self.embedding = nn.Linear(flat, embedding_size)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.embedding_dim = embedding_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T >= window, n_bins)`` -> embedding ``(B, embedding_size // 2)``."""
        seq = frame_windows(x, self.window, self.hop)
        last = len(self.cells) - 1
        for i, cell in enumerate(self.cells):
            if i < last:
                out = cell(seq)
                seq = max_pool2d(out.flatten(0, 1), (2, 1)).unflatten(0, out.shape[:2])
            else:
                seq = max_pool2d(cell(seq, last_only=True), (2, 1))
        return self.embedding_dropout(maxout(self.embedding(seq.flatten(1)), dim=1))


class GRCNN(CountermeasureModel):
    """GRCNN countermeasure over one or more feature streams (see the module docstring).

    Parameters
    ----------
    streams : sequence of str
        Store features, one stream each (``("mgd", "logmel")`` for ``grcnn``).
    n_bins : int, default 256
        Bins consumed per feature.
    window, window_hop : int, default 32, 10
        Window length and step in frames.
    gate_dropout : float, default 0.3
        Dropout in the ConvGRU cells.
    embedding_size : int, default 960
        Embedding layer width before maxout.
    embedding_dropout : float, default 0.5
        Dropout on each stream's embedding.
    train_frames : int, default 256
        Default training crop.
    eval_window : int or None, default None
        ``None`` scores whole utterances in one pass (any length works).
    eval_hop : int or None, default None
        Hop of the evaluation windows when ``eval_window`` is set (default: half a window).
    windows_per_conv : int or None, default None
        Windows per input-to-gate convolution; ``None``: all on accelerators, cache-sized
        chunks on CPU (see the module docstring). Changes speed, not results.

    Examples
    --------
    >>> model = GRCNN(("mgd", "logmel")).eval()
    >>> x = torch.randn(2, 64, 256)
    >>> model(mgd=x, logmel=x).shape
    torch.Size([2, 2])
    """

    def __init__(
        self,
        streams: Sequence[str] = ("mgd", "logmel"),
        n_bins: int = 256,
        window: int = WINDOW,
        window_hop: int = WINDOW_HOP,
        gate_dropout: float = 0.3,
        embedding_size: int = 960,
        embedding_dropout: float = 0.5,
        train_frames: int = 256,
        eval_window: int | None = None,
        eval_hop: int | None = None,
        windows_per_conv: int | None = None,
    ):
        super().__init__()
        if not streams:
            raise ModelConfigError("GRCNN needs at least one stream")
        for p in (gate_dropout, embedding_dropout):
            if not 0 <= p < 1:
                raise ModelConfigError(f"GRCNN: dropout must be in [0, 1), got {p}")
        if train_frames < window or (eval_window is not None and eval_window < window):
            raise ModelConfigError(f"GRCNN: train_frames/eval_window must be >= window ({window})")
        self.features = tuple(streams)
        self.n_bins = dict.fromkeys(self.features, n_bins)
        self.train_frames = train_frames
        self.eval_window = eval_window
        self.eval_hop = None if eval_window is None else (eval_hop or eval_window // 2)
        self.min_frames = window
        # MGD has n_fft // 2 + 1 bins: the Nyquist bin is left out (257 -> 256)
        self.unused_bins = {"mgd": 1} if "mgd" in self.features else {}
        self.streams = nn.ModuleDict(
            {
                f: GRCNNStream(
                    n_bins,
                    window,
                    window_hop,
                    CELLS,
                    gate_dropout,
                    embedding_size,
                    embedding_dropout,
                )
                for f in self.features
            }
        )
        width = sum(stream.embedding_dim for stream in self.streams.values())
        self.classifier = nn.Linear(width, 2)
        if windows_per_conv is not None and windows_per_conv < 1:
            raise ModelConfigError(f"GRCNN: windows_per_conv must be >= 1, got {windows_per_conv}")
        for stream in self.streams.values():
            for cell in stream.cells:
                cell.chunk = windows_per_conv

    @property
    def checkpoint_windows(self) -> bool:
        """Activation checkpointing per window and cell in training (``--checkpoint-windows``).

        Every window of every ConvGRU cell becomes a ``torch.utils.checkpoint`` segment
        (non-reentrant): the backward pass recomputes its gate maps instead of keeping them,
        so training memory holds the cells' states only (batch 32 of 256-frame crops: about
        a tenth of the activations) for about a third more compute per step. Changes
        memory and speed, not results. Not a model parameter: a property of the training
        run, so it is not recorded with the weights.
        """
        return all(cell.checkpoint_windows for cell in self._cells())

    @checkpoint_windows.setter
    def checkpoint_windows(self, on: bool) -> None:
        for cell in self._cells():
            cell.checkpoint_windows = bool(on)

    def _cells(self) -> list[ConvGRUCell]:
        return [cell for stream in self.streams.values() for cell in stream.cells]

    @property
    def embedding_dim(self) -> int:
        """Width of :meth:`embed`'s output: the streams' embeddings together (960 for two
        streams at the default ``embedding_size``)."""
        return self.classifier.in_features

    def embed(self, **features: torch.Tensor) -> torch.Tensor:
        """Utterance embedding ``(B, embedding_dim)``: the streams' embeddings concatenated
        (in :attr:`features` order), what the last linear layer reads, so
        ``forward(**x) == classifier(embed(**x))``."""
        xs = self.inputs(features)
        embeddings = [self.streams[f](x) for f, x in zip(self.features, xs, strict=True)]
        return torch.cat(embeddings, dim=1)

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 2)`` from ``{feature: (B, n_frames, n_bins)}`` (class 1 = bona fide)."""
        return self.classifier(self.embed(**features))
