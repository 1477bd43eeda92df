"""Model registry: name -> constructor, the features it reads, one-line description.

Also holds the contract every countermeasure model implements (:class:`CountermeasureModel`):
the attributes the data layer and training loop read (``features``, ``n_bins``,
``train_frames``, ``eval_window``, ``eval_hop``) and the checking of the keyword inputs
``model(mgd=x1, logmel=x2)``. A model's parameters and defaults are those of its class.
Constructors import their module on first use, so reading :data:`MODELS` builds nothing;
:func:`register_model` adds a model from Python.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from featstore.errors import ConfigError, SpoofstoreError


class ModelError(SpoofstoreError, ValueError):
    """A model name, a model parameter or a model input is unknown or has the wrong shape."""


class ModelConfigError(ModelError, ConfigError):
    """A model parameter is unknown or out of range, or a registration is invalid.

    Both a :class:`ModelError` and a :class:`featstore.errors.ConfigError`.
    """


class CountermeasureModel(nn.Module):
    """Base class of the registered models: the agreed attributes plus input checking.

    Subclasses set the attributes in ``__init__`` and implement ``forward(**features)``
    returning logits ``(B, 2)`` (class 1 = bona fide), calling :meth:`inputs` first.

    For ``trainer embed`` (back-ends on utterance embeddings) a model also implements
    ``embed(**features)`` returning the utterance embedding ``(B, embedding_dim)``, the
    input of its last linear layer, so that ``forward(**x) == last_linear(embed(**x))``
    (for inputs longer than one window of a windowed model: the mean over windows), and
    ``embedding_dim``. The built-in networks do; ``trainer embed`` refuses a model without
    them with a :class:`ModelError`.

    Attributes
    ----------
    features : tuple of str
        Store features consumed, in the order :meth:`inputs` returns them.
    n_bins : dict of str to int
        Bins consumed per feature; the data layer passes ``x[..., :n_bins]``.
    train_frames : int
        Default training crop length (frames).
    eval_window : int or None
        ``None``: score whole utterances; else windows of this many frames whose
        logits are averaged (hop :attr:`eval_hop`).
    eval_hop : int or None
        Window hop (frames) when :attr:`eval_window` is set.
    min_frames : int
        Inputs shorter than this are wrapped (repeated from their start) up to it.
    embedding_dim : int
        Width of ``embed``'s output (only for models that implement ``embed``).
    unused_bins : Mapping of str to int
        Trailing store bins of a feature the model leaves out by design (GRCNN: MGD's
        Nyquist bin, 257 store bins -> 256); a store feature must have exactly
        ``n_bins + unused_bins`` bins. Default: none.
    train_crops_per_utt : int
        Default training crops of each utterance per epoch (``trainer fit
        --crops-per-utt``); default 1. Models with short crops take more, so that an epoch
        covers a large part of every utterance.
    inference_memory_format : torch.memory_format
        Memory format of a trained model's weights for inference (``trainer score``,
        ``embed``, ``predict``): ``torch.channels_last`` where the CPU convolutions (oneDNN)
        run faster with it (the LCNN: 1.5x per utterance; the GRCNN is slower with it), else
        ``torch.contiguous_format`` (the default). Scores agree to float rounding either way.
    """

    features: tuple[str, ...]
    n_bins: dict[str, int]
    train_frames: int
    eval_window: int | None
    eval_hop: int | None
    min_frames: int
    unused_bins: Mapping[str, int] = MappingProxyType({})
    train_crops_per_utt: int = 1
    inference_memory_format: torch.memory_format = torch.contiguous_format

    def inputs(self, given: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Check the keyword inputs and return them in :attr:`features` order.

        Parameters
        ----------
        given : Mapping[str, torch.Tensor]
            ``{feature: (B, n_frames, n_bins)}`` float tensors.

        Returns
        -------
        list of torch.Tensor
            One tensor per feature, shorter than :attr:`min_frames` frames wrapped to it.

        Raises
        ------
        ModelError
            A feature is missing or unexpected, a tensor is not ``(B, n_frames, n_bins)``
            with the model's ``n_bins``, has no frames, or batch sizes differ.
        """
        name = type(self).__name__
        missing = [f for f in self.features if f not in given]
        extra = sorted(set(given) - set(self.features))
        if missing or extra:
            raise ModelError(
                f"{name} takes features {', '.join(self.features)}; "
                + (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected {', '.join(extra)}" if extra else "")
            )
        out = []
        batch = None
        for feature in self.features:
            x = given[feature]
            want = self.n_bins[feature]
            if x.ndim != 3 or x.shape[-1] != want:
                raise ModelError(
                    f"{name}: {feature} must be (batch, n_frames, {want}), got {tuple(x.shape)}"
                )
            if x.shape[1] == 0:
                raise ModelError(f"{name}: {feature} has no frames")
            if batch is not None and x.shape[0] != batch:
                raise ModelError(
                    f"{name}: batch sizes differ between features ({batch} vs "
                    f"{x.shape[0]} for {feature})"
                )
            batch = x.shape[0]
            out.append(wrap_frames(x, self.min_frames))
        return out


def feature_channels(model: str, features: Sequence[str]) -> tuple[str, ...]:
    """Check the ``features`` parameter of a model that stacks features as input channels.

    Parameters
    ----------
    model : str
        Model class name (for messages).
    features : sequence of str
        Store feature names, one input channel each (they must have the same bins).

    Returns
    -------
    tuple of str

    Raises
    ------
    ModelConfigError
        Not a non-empty sequence of distinct names.

    Examples
    --------
    >>> feature_channels("LCNN", ["mgd", "logmel"])
    ('mgd', 'logmel')
    """
    names = (features,) if isinstance(features, str) else tuple(features)
    if (
        not names
        or not all(isinstance(f, str) and f for f in names)
        or len(set(names)) < len(names)
    ):
        raise ModelConfigError(
            f"{model}: features must be distinct feature names, got {features!r}"
        )
    return names


def mgd_nyquist(features: Sequence[str]) -> dict[str, int]:
    """``unused_bins`` of a model reading ``features``: MGD's Nyquist bin (257 -> 256 bins,
    so that MGD stacks with 256-bin features and divides by powers of two)."""
    return {"mgd": 1} if "mgd" in features else {}


def wrap_frames(x: torch.Tensor, min_frames: int) -> torch.Tensor:
    """Repeat ``x`` (B, n_frames, n_bins) from its start until it has ``min_frames`` frames.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, n_frames, n_bins)`` with ``n_frames >= 1``.
    min_frames : int
        Minimum length; longer inputs are returned unchanged.

    Returns
    -------
    torch.Tensor
        ``(B, max(n_frames, min_frames), n_bins)``.

    Examples
    --------
    >>> wrap_frames(torch.arange(3.0).view(1, 3, 1), 7).flatten().tolist()
    [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    """
    n = x.shape[1]
    if n >= min_frames:
        return x
    index = torch.arange(min_frames, device=x.device) % n
    return x.index_select(1, index)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes
    ----------
    name : str
        Registry name (``"grcnn"``, ...).
    constructor : Callable[..., CountermeasureModel]
        Builds the model from keyword parameters (see :func:`build_model`).
    features : tuple of str
        Store features it consumes.
    description : str
        One line for listings and the docs.
    family : {"neural", "gmm"}, default "neural"
        ``"gmm"``: an official GMM baseline (:mod:`trainer.gmm_baseline`), trained and
        scored by ``trainer.fit``/``trainer.score`` without a network; :func:`build_model`
        refuses it.
    """

    name: str
    constructor: Callable[..., CountermeasureModel]
    features: tuple[str, ...]
    description: str
    family: str = "neural"


def _constructor(
    name: str, model: type[CountermeasureModel] | str, fixed: Mapping[str, Any]
) -> Callable[..., CountermeasureModel]:
    """A function building ``model`` (a class or "module:Class", imported on first use).

    Its parameters and their defaults are those of the class; ``fixed`` ones are set by the
    registry entry and cannot be passed.
    """

    def construct(**kwargs: Any) -> CountermeasureModel:
        if isinstance(model, str):
            module, _, attr = model.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            cls = model
        valid = [p for p in inspect.signature(cls).parameters if p not in fixed]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ModelConfigError(
                f"model {name!r} has no parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(valid)}"
            )
        return cls(**fixed, **kwargs)

    construct.__name__ = construct.__qualname__ = f"build_{name.replace('-', '_')}"
    return construct


_REGISTRY: dict[str, ModelSpec] = {}

MODELS: Mapping[str, ModelSpec] = MappingProxyType(_REGISTRY)
"""Every registered model by name (a read-only view; see :func:`register_model`)."""


def register_model(
    name: str,
    model: type[CountermeasureModel] | str,
    features: Sequence[str],
    description: str = "",
    *,
    fixed: Mapping[str, Any] | None = None,
    replace: bool = False,
) -> ModelSpec:
    """Add a model to the registry, so that :func:`build_model` and ``trainer.fit`` know it.

    Parameters
    ----------
    name : str
        Registry name.
    model : type or str
        A :class:`CountermeasureModel` subclass, or its ``"module:Class"`` import path
        (imported on first build). Its ``__init__`` parameters, with their defaults, are the
        model's parameters.
    features : sequence of str
        The store features it consumes (the ``features`` attribute of its instances).
    description : str, default ""
        One line for listings.
    fixed : Mapping[str, Any], optional
        Constructor arguments this entry sets; they cannot be passed to :func:`build_model`
        (``{"streams": ("mgd",)}`` makes ``grcnn-mgd`` out of the GRCNN class).
    replace : bool, default False
        Replace a model already registered under ``name``.

    Returns
    -------
    ModelSpec
        The registered model.

    Raises
    ------
    ModelConfigError
        Empty or taken name (and ``replace`` is false), no features, or ``model`` neither a
        class nor an import path.

    Notes
    -----
    The registry lives in the process that calls this function: build a registered model
    with the Python API (``trainer.fit(..., model=name)``) in the process that registered
    it.

    Examples
    --------
    >>> class MeanEnergy(CountermeasureModel):
    ...     def __init__(self, n_bins: int = 60):
    ...         super().__init__()
    ...         self.features, self.n_bins = ("lfcc",), {"lfcc": n_bins}
    ...         self.train_frames, self.eval_window, self.eval_hop = 400, None, None
    ...         self.min_frames = 1
    ...         self.head = nn.Linear(n_bins, 2)
    ...     def forward(self, **features):
    ...         (x,) = self.inputs(features)
    ...         return self.head(x.mean(dim=1))
    >>> spec = register_model("mean-energy", MeanEnergy, ("lfcc",), replace=True)
    >>> build_model("mean-energy", n_bins=20).n_bins
    {'lfcc': 20}
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelConfigError(f"model name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ModelConfigError(f"model {name!r} is already registered; pass replace=True")
    features = (features,) if isinstance(features, str) else tuple(features)
    if not features or not all(isinstance(f, str) and f for f in features):
        raise ModelConfigError(f"model {name!r}: features must be feature names, got {features!r}")
    if not (isinstance(model, type) or (isinstance(model, str) and ":" in model)):
        raise ModelConfigError(
            f"model {name!r}: model must be a class or 'module:Class', got {model!r}"
        )
    spec = ModelSpec(name, _constructor(name, model, dict(fixed or {})), features, description)
    _REGISTRY[name] = spec
    return spec


register_model(
    "grcnn",
    "trainer.models.grcnn:GRCNN",
    ("mgd", "logmel"),
    "dual-stream gated recurrent CNN (Gomez-Alanis et al. 2019) on MGD + log-mel",
    fixed={"streams": ("mgd", "logmel")},
)
register_model(
    "grcnn-mgd",
    "trainer.models.grcnn:GRCNN",
    ("mgd",),
    "single-stream GRCNN on MGD (ablation)",
    fixed={"streams": ("mgd",)},
)
register_model(
    "grcnn-logmel",
    "trainer.models.grcnn:GRCNN",
    ("logmel",),
    "single-stream GRCNN on log-mel (ablation)",
    fixed={"streams": ("logmel",)},
)
register_model(
    "vgg10",
    "trainer.models.vgg10:VGG10",
    ("fbank",),
    "10-layer VGG-style CNN on 64-band filterbank windows of 17 frames",
)
register_model(
    "lcnn",
    "trainer.models.lcnn:LCNN",
    ("lfcc",),
    "LFCC-LCNN (ASVspoof 2021 baseline): light CNN with max-feature-map + BLSTM",
)


def _not_a_network(name: str) -> Callable[..., CountermeasureModel]:
    def construct(**kwargs: Any) -> CountermeasureModel:
        raise ModelError(
            f"model {name!r} is a GMM baseline, not a neural network: train it with "
            f"trainer.fit(store, model={name!r}) or 'trainer fit STORE --model {name}'"
        )

    return construct


def _register_gmm_baseline(name: str, feature: str, description: str) -> None:
    _REGISTRY[name] = ModelSpec(name, _not_a_network(name), (feature,), description, "gmm")


_register_gmm_baseline(
    "lfcc-gmm",
    "lfcc",
    "LFCC-GMM (ASVspoof 2019/2021 baseline): two 512-component diagonal GMMs, frame LLR",
)
_register_gmm_baseline(
    "cqcc-gmm",
    "cqcc",
    "CQCC-GMM (ASVspoof 2019/2021 baseline): two 512-component diagonal GMMs, frame LLR",
)


def is_gmm_model(name: object) -> bool:
    """Whether ``name`` is a registered GMM baseline (``lfcc-gmm``, ``cqcc-gmm``).

    Examples
    --------
    >>> is_gmm_model("cqcc-gmm"), is_gmm_model("grcnn"), is_gmm_model(None)
    (True, False, False)
    """
    spec = MODELS.get(name) if isinstance(name, str) else None
    return spec is not None and spec.family == "gmm"


def build_model(name: str, **kwargs: Any) -> CountermeasureModel:
    """Build a registered countermeasure model.

    Parameters
    ----------
    name : str
        One of ``sorted(MODELS)``.
    **kwargs
        Model parameters that differ from the defaults (e.g. ``dropout=0.2``,
        ``eval_hop=1``); see each model class.

    Returns
    -------
    CountermeasureModel
        A plain ``nn.Module`` on the CPU in float32, in training mode, with the attributes
        ``features``, ``n_bins``, ``train_frames``, ``eval_window``, ``eval_hop``.

    Raises
    ------
    ModelError
        Unknown model name (the message lists the available ones).
    ModelConfigError
        Unknown parameter or a parameter value out of range (a :class:`ModelError` and a
        :class:`featstore.errors.ConfigError`).

    Examples
    --------
    >>> model = build_model("grcnn")
    >>> model.features, model.n_bins["mgd"], model.train_frames
    (('mgd', 'logmel'), 256, 256)
    """
    try:
        spec = MODELS[name]
    except (KeyError, TypeError):
        raise ModelError(
            f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}"
        ) from None
    return spec.constructor(**kwargs)
