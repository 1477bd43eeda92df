"""The build's configuration: :class:`BuildConfig`, its TOML file, and its fingerprint.

Every setting of ``featstore build`` with its default in one place; validated on
construction (types and ranges) and, for feature parameters, by running each kernel once
on a short signal (:func:`check_features`). The fingerprint covers what decides the bytes
of a store (features and their resolved parameters, layout, format), not how a build runs
(``jobs``, ``batch_size``, ``strict``, ``fsync``, ``max_quarantine``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featstore.errors import ConfigError, LocatedError
from featstore.features.registry import get_feature
from featstore.features.validation import validate_feature_params
from featstore.store.layout import (
    CLEAN_LAYOUT_VERSION,
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_SHARD_FRAMES,
    RESERVED_NAMES,
)

__all__ = ["FORMATS", "BuildConfig", "check_features", "name_list", "sha256_json"]

FORMATS = ("zarr", "hdf5")


@dataclass(frozen=True)
class BuildConfig:
    """How to build a store. Its :meth:`fingerprint_record` is hashed into the store.

    Attributes
    ----------
    features : tuple of str
        Registry names of the features to extract, in store order.
    feature_params : Mapping[str, Mapping[str, Any]]
        Per-feature parameter overrides (``{"mgd": {"rho": 0.2}}``).
    format : {"zarr", "hdf5"} or None
        Store format; None picks it from the output suffix (``.h5``/``.hdf5`` -> HDF5).
    jobs : int
        Worker processes (1: extract in this process; -1: one per core).
    batch_size : int
        Utterances per worker task (amortises inter-process overhead).
    chunk_frames : int
        Rows per chunk (a crop touches at most ``ceil(crop / chunk) + 1`` chunks).
    shard_frames : int
        Rows per shard file (Zarr) and per write; a multiple of ``chunk_frames``.
    strict : bool
        Fail on the first bad utterance instead of quarantining it.
    fsync : bool
        ``fsync`` data before each commit (survive power loss, not only a killed process).
    max_quarantine : float
        The largest fraction of a split's utterances that may be quarantined (0 to 1); a
        split losing more fails the build, and so does a split left without any utterance.

    Only ``features`` (with resolved parameters), ``chunk_frames``, ``shard_frames`` and the
    format decide the bytes of a store; those make up the fingerprint. ``jobs``,
    ``batch_size``, ``strict``, ``fsync`` and ``max_quarantine`` do not.

    Raises
    ------
    ConfigError
        An invalid value (no or repeated features, unknown format, ``jobs``, sizes).
    FeatureError
        An unknown feature or feature parameter.
    """

    features: tuple[str, ...] = ("mgd", "logmel")
    feature_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    format: str | None = None
    jobs: int = 2
    batch_size: int = 8
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    shard_frames: int = DEFAULT_SHARD_FRAMES
    strict: bool = False
    fsync: bool = True
    max_quarantine: float = 0.5

    def __post_init__(self) -> None:
        features = tuple(self.features)
        object.__setattr__(self, "features", features)
        params = {k: dict(v) for k, v in dict(self.feature_params).items()}
        object.__setattr__(self, "feature_params", params)
        if not features:
            raise ConfigError("no features selected")
        if len(set(features)) != len(features):
            raise ConfigError(f"feature listed twice: {', '.join(features)}")
        reserved = sorted(set(features) & RESERVED_NAMES)
        if reserved:
            raise ConfigError(
                f"a feature may not be named {reserved[0]!r}: every split of a store holds a "
                "node of that name; register the feature under another name"
            )
        for name in features:
            get_feature(name).resolve(**params.get(name, {}))
        for name in params:
            get_feature(name)  # unknown names in overrides are errors too
        if self.format not in (None, *FORMATS):
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        self._check_types()
        if self.jobs == 0 or self.jobs < -1:
            raise ConfigError(f"jobs must be >= 1 (or -1 for every core), got {self.jobs}")
        for name in ("batch_size", "chunk_frames", "shard_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.max_quarantine <= 1.0:
            raise ConfigError(
                f"max_quarantine must be a fraction from 0 to 1, got {self.max_quarantine}"
            )
        if self.shard_frames % self.chunk_frames:
            raise ConfigError(
                f"shard_frames ({self.shard_frames}) must be a multiple of chunk_frames "
                f"({self.chunk_frames})"
            )

    def _check_types(self) -> None:
        """Integer, boolean and fraction fields hold values of their type (TOML allows any)."""
        for name in ("jobs", "batch_size", "chunk_frames", "shard_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        for name in ("strict", "fsync"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        value = self.max_quarantine
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"max_quarantine must be a number, got {value!r}")

    def feature_records(self) -> dict[str, dict[str, Any]]:
        """``describe()`` of each feature with its overrides, in store order."""
        return {
            name: get_feature(name).describe(**self.feature_params.get(name, {}))
            for name in self.features
        }

    def fingerprint_record(self, fmt: str) -> dict[str, Any]:
        """The part of the configuration that decides the store's bytes (JSON-ready)."""
        return {
            "format_version": CLEAN_LAYOUT_VERSION,  # the clean view's: views do not change it
            "format": fmt,
            "features": self.feature_records(),
            "feature_order": list(self.features),
            "chunk_frames": self.chunk_frames,
            "shard_frames": self.shard_frames,
        }

    def fingerprint(self, fmt: str) -> str:
        """Hex sha256 of the canonical JSON of :meth:`fingerprint_record`."""
        return sha256_json(self.fingerprint_record(fmt))

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> BuildConfig:
        """Read a ``featstore.toml`` (the file ``featstore build --config`` takes).

        The file sets the same fields as the dataclass, at the top level or in a ``[build]``
        table. ``features`` is either a list of names (default parameters, or parameters in
        ``[feature_params.NAME]`` tables) or a table of per-feature parameter tables, whose
        order is the store's feature order::

            jobs = 2
            shard_frames = 65536
            max_quarantine = 0.1

            [features.mgd]
            rho = 0.2

            [features.logmel]   # default parameters

        Every value is checked before anything is extracted: each feature's kernel runs once
        on a short noise signal with the file's parameters (:func:`check_features`).

        Raises
        ------
        LocatedError
            Unreadable TOML or unknown keys.
        ConfigError
            A value of the wrong type or out of range (``jobs = 0``, ``chunk_frames = -1``,
            ``[features.mgd] win_length = 0``): the message names the file and the field.
        FeatureError
            Unknown feature or parameter.
        """
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise LocatedError(path, "no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise LocatedError(path, f"invalid TOML: {exc}") from None
        except OSError as exc:
            raise LocatedError(path, f"cannot read: {exc.strerror or exc}") from None
        doc = _toml_fields(doc, path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise LocatedError(
                path, f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        features = doc.pop("features", None)
        kwargs: dict[str, Any] = dict(doc)
        if not isinstance(kwargs.get("feature_params", {}), dict):
            raise ConfigError(f"{path}: feature_params must be a table of [feature_params.NAME]")
        if isinstance(features, dict):
            kwargs["features"] = tuple(features)
            params = {k: dict(v) for k, v in features.items() if isinstance(v, dict)}
            for k, v in kwargs.get("feature_params", {}).items():
                params.setdefault(k, {}).update(v)
            kwargs["feature_params"] = params
        elif isinstance(features, list | tuple | str):
            kwargs["features"] = name_list(features)
        elif features is not None:
            raise ConfigError(f"{path}: features must be a list of names or [features.NAME] tables")
        try:
            cfg = cls(**kwargs)
            check_features(cfg)
        except TypeError as exc:
            raise LocatedError(path, str(exc)) from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return cfg


def _toml_fields(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """The configuration fields of a parsed TOML document: top level, or a ``[build]`` table.

    With a ``[build]`` table, top-level ``[features.NAME]``/``[feature_params.NAME]`` tables
    are still read (they are not silently dropped); a field set in both places is an error.
    """
    if "build" not in doc:
        return dict(doc)
    build_table = doc["build"]
    if not isinstance(build_table, dict):
        raise ConfigError(f"{path}: build must be a table ([build])")
    rest = {k: v for k, v in doc.items() if k != "build"}
    twice = sorted(set(build_table) & set(rest))
    if twice:
        raise ConfigError(f"{path}: {', '.join(twice)} set both in [build] and at the top level")
    return {**build_table, **rest}


def name_list(features: str | Iterable[str]) -> tuple[str, ...]:
    """Names of a comma-separated string (``"mgd, logmel"``) or a sequence, in order."""
    if isinstance(features, str):
        return tuple(f.strip() for f in features.split(",") if f.strip())
    return tuple(features)


def check_features(cfg: BuildConfig) -> None:
    """Refuse feature parameters no utterance can be extracted with, before any extraction.

    :func:`~featstore.features.validation.validate_feature_params` checks every parameter of
    the built-in features against the conditions under which their kernels fail or return
    useless frames, and dry-runs a registered user kernel on 0.5 s of deterministic noise.

    Raises
    ------
    ConfigError
        Naming the feature and the parameter.
    """
    for name in cfg.features:
        validate_feature_params(name, cfg.feature_params.get(name, {}))


def sha256_json(obj: Any) -> str:
    """Hex sha256 of ``obj``'s canonical JSON (sorted keys, no spaces, ASCII)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
