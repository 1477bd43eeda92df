"""What defines a training run: :class:`FitConfig`, read from arguments or a ``train.toml``.

This module imports neither torch nor the training loop, so the run record
(:mod:`trainer.runs`) and the command line can use it cheaply.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trainer.errors import TrainingError

__all__ = ["RESUMABLE_CHANGES", "FitConfig", "field_problem", "load_config_file"]

RESUMABLE_CHANGES = frozenset(
    {
        "store",
        "out",
        "epochs",
        "workers",
        "device",
        "precision",
        "resume",
        "patience",
        "compile",
        "checkpoint_windows",
        "channels_last",
        "deterministic",
        "threads",
        "eval_batch_size",
        "progress",
        "cache_dir",
        "verify",
        "tensorboard",
    }
)
"""Fields a resumed run may change; any other field must match the checkpoint's config."""

_NOT_RECORDED = frozenset({"cache_dir", "verify"})
"""Fields of this machine or invocation, not of the run: left out of ``config.json`` and
checkpoints."""


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a training run (``--config train.toml`` sets the same fields).

    Attributes
    ----------
    store : str
        Feature store path (Zarr directory or ``.h5``) or URL.
    model : str, default "grcnn"
        Model name (see ``trainer.MODELS``).
    out : str or None
        Run directory; default ``runs/<model>-<YYYYmmdd-HHMMSS>``.
    epochs : int, default 20
        Epochs to train.
    batch_size : int, default 32
        Crops per optimizer step (per rank under DDP).
    crop_frames : int or None
        Frames per training crop; default ``model.train_frames``.
    lr, weight_decay : float
        AdamW peak learning rate and decoupled weight decay.
    warmup : float, default 0.05
        Fraction of all steps spent in linear warm-up (then cosine decay to 0).
    grad_clip : float or None, default 5.0
        Max global gradient norm (None: no clipping).
    seed : int, default 0
        Seeds model initialisation, dropout and every epoch's crop plan.
    device : {"auto", "cpu", "cuda"} or str
        "auto" picks CUDA when available (also "cuda:1" etc.).
    precision : {"auto", "fp32", "bf16", "fp16"}
        "auto": bf16 (or fp16) autocast on CUDA; on a CPU bf16 where it computes bf16
        natively (AVX-512 BF16 or AMX), else fp32. fp16 on CPU falls back to fp32.
    workers : int, default 2
        DataLoader worker processes (0: load in the training process).
    balance : bool, default False
        Class-balanced crops; otherwise the loss is class-weighted.
    resume : bool, default False
        Continue the run in ``out`` (default: the latest ``runs/<model>-*``) from ``last.pt``.
    patience : int or None
        Stop after this many epochs without a better dev EER (None: never).
    compile : bool, default False
        ``torch.compile`` the training model.
    checkpoint_windows : bool, default False
        Activation checkpointing per window of the GRCNN's cells: the backward pass
        recomputes the gate maps instead of keeping them (about a third more compute, a
        fraction of the memory; same results). GRCNN models only.
    channels_last : bool, default True
        Channels-last memory format for the model on CUDA with bf16/fp16 autocast (tensor
        cores); ignored on CPU and in fp32.
    deterministic : bool, default False
        ``torch.use_deterministic_algorithms(True)`` (and no cuDNN autotuning).
    threads : int or None
        ``torch.set_num_threads``; None leaves torch's default.
    eval_batch_size : int or None
        Segments per dev batch; default ``batch_size``.
    train_split, dev_split : str
        Store splits to train on and to validate on.
    model_kwargs : dict
        Extra keyword arguments of ``build_model`` (e.g. smaller widths for tests).
    progress : bool, default True
        Print the run directory, per-epoch summaries and a tqdm bar.
    cache_dir : str or None
        Local read cache of a store at a URL (``featstore.open_store(..., cache_dir=...)``);
        None: ``$SPOOFSTORE_CACHE_DIR`` if set. A property of this machine, not of the run:
        not recorded in ``config.json`` or checkpoints.
    verify : bool, default False
        Check the store end to end first (``featstore verify``: checksums, NaN/inf, index)
        and refuse to train on a store with problems. Not recorded.
    tensorboard : bool or None
        TensorBoard events in ``<out>/tb``: True requires the ``tensorboard`` package
        (``pip install 'spoofstore[tensorboard]'``), False never writes them, None writes
        them when the package is installed.
    crops_per_utt : int or None
        Random crops of each training utterance per epoch (stratified over the utterance);
        default the model's ``train_crops_per_utt`` (vgg10 32, others 1).
    views : {"all", "clean", "aug"}, default "all"
        Which views of a store with augmented views the crops read: every usable view,
        the clean one only, or the augmented ones only (``aug`` needs a store with them).
        Picked per crop and epoch from ``seed``; quarantined views are never read.
    clean_prob : float or None
        With ``views = "all"``: probability of the clean view (the rest uniform over the
        usable augmented views); None: uniform over all usable views.
    spec_mask : bool, default False
        SpecAugment-style masking of training batches on the device, after normalisation:
        ``time_masks`` time masks of up to ``time_mask_width`` frames and ``freq_masks``
        frequency masks of up to ``freq_mask_width`` bins (each at most half the axis),
        set to 0 (the bin mean), drawn from ``(seed, epoch, step)``.
    time_masks, freq_masks : int, default 2, 2
        Masks per crop along each axis (with ``spec_mask``).
    time_mask_width, freq_mask_width : int, default 20, 16
        Largest mask width in frames and in bins (with ``spec_mask``).
    features : str or None
        Store features the model reads, comma-separated (``"mgd"``, ``"mgd,logmel"``: one
        input channel each), for models with a ``features`` parameter (lcnn, vgg10);
        default the model's own (``trainer models``). Recorded in the run's model
        parameters, so scoring rebuilds the same model.
    """

    store: str = ""
    model: str = "grcnn"
    out: str | None = None
    epochs: int = 20
    batch_size: int = 32
    crop_frames: int | None = None
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup: float = 0.05
    grad_clip: float | None = 5.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int = 2
    balance: bool = False
    resume: bool = False
    patience: int | None = None
    compile: bool = False
    checkpoint_windows: bool = False
    channels_last: bool = True
    deterministic: bool = False
    threads: int | None = None
    eval_batch_size: int | None = None
    train_split: str = "train"
    dev_split: str = "dev"
    model_kwargs: dict = field(default_factory=dict)
    progress: bool = True
    cache_dir: str | None = None
    verify: bool = False
    tensorboard: bool | None = None
    crops_per_utt: int | None = None
    views: str = "all"
    clean_prob: float | None = None
    spec_mask: bool = False
    time_masks: int = 2
    time_mask_width: int = 20
    freq_masks: int = 2
    freq_mask_width: int = 16
    features: str | None = None

    def validate(self) -> FitConfig:
        """Check every field's type and range; raises :class:`TrainingError` naming the field."""
        if not self.store:
            raise TrainingError("no store given")
        for f in fields(self):
            problem = field_problem(f.name, getattr(self, f.name))
            if problem:
                raise TrainingError(f"{f.name} {problem}")
        if self.clean_prob is not None and self.views != "all":
            raise TrainingError(
                f"clean_prob applies to views 'all' (clean and augmented views mixed), not to "
                f"views {self.views!r}; drop --clean-prob or use --views all"
            )
        return self

    @property
    def feature_list(self) -> tuple[str, ...] | None:
        """``features`` as a tuple of names (None: the model's own)."""
        if self.features is None:
            return None
        return tuple(f.strip() for f in self.features.split(","))

    def to_dict(self) -> dict[str, Any]:
        """The recorded fields (``config.json``'s ``"fit"``): all but ``cache_dir``, ``verify``."""
        return {k: v for k, v in asdict(self).items() if k not in _NOT_RECORDED}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | os.PathLike) -> FitConfig:
        """The config recorded in ``source`` (a ``config.json`` or checkpoint).

        Raises
        ------
        TrainingError
            ``data`` is not a mapping or names a field :class:`FitConfig` does not have.
        """
        if not isinstance(data, Mapping):
            raise TrainingError(f"{source}: 'fit' must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise TrainingError(f"{source}: unknown fit field(s) {', '.join(unknown)}")
        return cls(**data)


_POSITIVE_INT = ("epochs", "batch_size")
_OPTIONAL_POSITIVE_INT = ("crop_frames", "eval_batch_size", "patience", "threads", "crops_per_utt")
_NON_NEGATIVE_INT = (
    "seed",
    "workers",
    "time_masks",
    "time_mask_width",
    "freq_masks",
    "freq_mask_width",
)
_BOOL = (
    "balance",
    "resume",
    "compile",
    "checkpoint_windows",
    "channels_last",
    "deterministic",
    "progress",
    "verify",
    "spec_mask",
)
VIEW_MODES = ("all", "clean", "aug")
"""Values of ``FitConfig.views`` (``trainer.data.view_plan``)."""
_OPTIONAL_STR = ("out", "cache_dir")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def field_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for :class:`FitConfig` field ``name`` (None: nothing).

    Parameters
    ----------
    name : str
        A field name.
    value : Any
        Its value (from a ``train.toml``, a flag or the Python API).

    Returns
    -------
    str or None
        E.g. ``"must be a positive integer, got -3"``.

    Examples
    --------
    >>> field_problem("epochs", -3)
    'must be a positive integer, got -3'
    >>> field_problem("lr", 1e-3) is None
    True
    """
    if name in _POSITIVE_INT or (name in _OPTIONAL_POSITIVE_INT and value is not None):
        if not _is_int(value) or value < 1:
            return f"must be a positive integer, got {value!r}"
    elif name in _NON_NEGATIVE_INT:
        if not _is_int(value) or value < 0:
            return f"must be an integer >= 0, got {value!r}"
    elif name in _BOOL:
        if not isinstance(value, bool):
            return f"must be true or false, got {value!r}"
    elif name == "lr":
        if not _is_number(value) or value <= 0:
            return f"must be a positive number, got {value!r}"
    elif name == "grad_clip" and value is not None:  # 0: no clipping (TOML has no null)
        if not _is_number(value) or value < 0:
            return f"must be a number >= 0 (0: no clipping), got {value!r}"
    elif name == "weight_decay":
        if not _is_number(value) or value < 0:
            return f"must be a number >= 0, got {value!r}"
    elif name == "warmup":
        if not _is_number(value) or not 0 <= value < 1:
            return f"must be a fraction in [0, 1), got {value!r}"
    elif name == "precision":
        if value not in ("auto", "fp32", "bf16", "fp16"):
            return f"must be auto, fp32, bf16 or fp16, got {value!r}"
    elif name == "device":
        if not isinstance(value, str) or not (value in ("auto", "cpu") or value.startswith("cuda")):
            return f"must be auto, cpu or cuda[:N], got {value!r}"
    elif name in ("store", "model", "train_split", "dev_split"):
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
    elif name in _OPTIONAL_STR:
        if value is not None and not isinstance(value, str):
            return f"must be a string, got {value!r}"
    elif name == "model_kwargs":
        if not isinstance(value, Mapping):
            return f"must be a table of model parameters, got {value!r}"
    elif name == "views":
        if value not in VIEW_MODES:
            return f"must be all, clean or aug, got {value!r}"
    elif name == "clean_prob" and value is not None:
        if not _is_number(value) or not 0 <= value <= 1:
            return f"must be a probability in [0, 1], got {value!r}"
    elif name == "features" and value is not None:
        names = value.split(",") if isinstance(value, str) else []
        if not names or not all(n.strip() for n in names):
            return f"must be feature names separated by commas (mgd,logmel), got {value!r}"
        if len({n.strip() for n in names}) != len(names):
            return f"names a feature twice: {value!r}"
    return None


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Fields of a ``train.toml``: :class:`FitConfig` fields, with ``-`` or ``_`` in names.

    The fields sit either at the top level or, all of them, in a ``[fit]`` table (then
    nothing else may sit at the top level). TOML has no null: leave a field out for its
    default, and write ``grad_clip = 0`` for no gradient clipping. ``docs/config.md`` lists
    every field.

    Parameters
    ----------
    path : str or os.PathLike
        TOML file.

    Returns
    -------
    dict
        FitConfig field -> value, as written (values are not range-checked here; see
        :meth:`FitConfig.validate`).

    Raises
    ------
    TrainingError
        Unreadable file, bad TOML, an unknown key, a key outside ``[fit]`` next to it, or a
        value of the wrong type (``epochs = "3"``) or out of range
        (``train.toml: epochs must be a positive integer, got -3``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "train.toml"
    >>> _ = p.write_text('epochs = 3\\nbatch-size = 8\\n')
    >>> load_config_file(p)
    {'epochs': 3, 'batch_size': 8}
    >>> _ = p.write_text('[fit]\\nepochs = 3\\nmodel-kwargs = { dropout = 0.2 }\\n')
    >>> load_config_file(p)
    {'epochs': 3, 'model_kwargs': {'dropout': 0.2}}
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TrainingError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TrainingError(f"{path}: cannot read config (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise TrainingError(f"{path}: invalid TOML ({exc})") from None
    if isinstance(data.get("fit"), dict):
        outside = sorted(k for k in data if k != "fit")
        if outside:
            raise TrainingError(
                f"{path}: key(s) {', '.join(outside)} outside the [fit] table would be "
                "ignored; move them into [fit] (or drop the [fit] header)"
            )
        data = data["fit"]
    types = {f.name: f.type for f in fields(FitConfig)}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in types:
            raise TrainingError(
                f"{path}: unknown key {key!r}; valid keys: {', '.join(sorted(types))}"
            )
        if name in out:
            raise TrainingError(f"{path}: {name!r} is given twice (as '-' and '_' spellings)")
        _check_toml_type(path, key, value, str(types[name]))
        problem = field_problem(name, value)
        if problem:
            raise TrainingError(f"{path}: {key} {problem}")
        out[name] = value
    return out


_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "dict": (dict,),
}
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "dict": "a table ({ name = value, ... })",
}


def _check_toml_type(path: Path, key: str, value: Any, annotation: str) -> None:
    """Raise :class:`TrainingError` unless ``value`` fits the field's ``annotation``."""
    kinds = [k.strip() for k in annotation.split("|") if k.strip() != "None"]
    for kind in kinds:
        allowed = _TOML_TYPES.get(kind)
        if allowed is None:  # a type this check does not know: leave it to FitConfig
            return
        if isinstance(value, allowed) and (kind == "bool" or not isinstance(value, bool)):
            return
    want = " or ".join(_TYPE_NAMES[k] for k in kinds)
    raise TrainingError(f"{path}: {key} must be {want}, got {value!r}")
