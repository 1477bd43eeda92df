"""Augmentation recipes: which augmentations make a view, parsed from one string.

Grammar (whitespace around tokens is ignored)::

    recipe := chain ("|" chain)*         alternatives: one is drawn per augmented copy
    chain  := step ("+" step)*           applied in order
    step   := NAME ["(" [KEY "=" VALUE ("," KEY "=" VALUE)*] ")"]
    VALUE  := 'quoted' | "quoted" | bare  (bare: integer, number, true, false, none, or text)

``"rawboost-5|codec(codecs=mp3,max_kbps=64)+noise"``: half of the copies get RawBoost 5, the
other half an MP3 round trip at up to 64 kbit/s followed by additive noise. (A comma inside a
value needs quotes: ``codec(codecs='mp3,opus')``.)

A build calls, per utterance ``u`` and augmented view ``k``::

    rng = view_rng(seed, u, k)
    signal_k = augment(signal, rng, recipe)     # draws a chain from rng, then applies it

so every copy depends on (seed, utterance id, k) only, whatever the order or the process.
:meth:`Recipe.to_json` is the canonical record a store keeps (every parameter resolved), and
:meth:`Recipe.from_json` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from featstore.augment.registry import get_augmentation
from featstore.augment.tracing import with_params
from featstore.errors import ConfigError, FeatureError
from featstore.signal import as_float_signal


@dataclass(frozen=True)
class Step:
    """One augmentation of a chain, its parameters resolved.

    Attributes
    ----------
    name : str
        Registry name.
    params : Mapping[str, Any]
        Every parameter, defaults filled in.
    """

    name: str
    params: Mapping[str, Any]

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}`` (JSON-ready)."""
        return {"name": self.name, "params": dict(self.params)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return self.name == other.name and dict(self.params) == dict(other.params)

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(dict(self.params), sort_keys=True)))

    def __str__(self) -> str:
        """The name, with the parameters that differ from their defaults (canonical)."""
        defaults = get_augmentation(self.name).defaults
        changed = {k: v for k, v in self.params.items() if defaults.get(k) != v}
        if not changed:
            return self.name
        args = ",".join(f"{k}={_format_value(v)}" for k, v in changed.items())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class Chain:
    """Augmentations applied one after the other."""

    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return "+".join(str(s) for s in self.steps)


@dataclass(frozen=True)
class Recipe:
    """Alternative chains; each augmented copy uses one, drawn uniformly.

    Build one with :func:`parse_recipe`.
    """

    chains: tuple[Chain, ...]

    def __str__(self) -> str:
        return "|".join(str(c) for c in self.chains)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: ``{"recipe": text, "alternatives": [[step, ...], ...]}``."""
        return {
            "recipe": str(self),
            "alternatives": [[s.describe() for s in c.steps] for c in self.chains],
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal recipes give equal bytes."""
        return json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """The recipe a :meth:`to_json` record describes (parameters checked again).

        Raises
        ------
        ConfigError
            Not such a record, or an augmentation/parameter this installation lacks.
        """
        try:
            record = json.loads(text)
            alternatives = record["alternatives"]
            chains = tuple(
                Chain(tuple(_step(s["name"], dict(s["params"])) for s in chain))
                for chain in alternatives
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"not an augmentation recipe record: {exc}") from None
        if not chains or not all(c.steps for c in chains):
            raise ConfigError("not an augmentation recipe record: empty")
        return cls(chains)

    def draw(self, rng: np.random.Generator) -> Chain:
        """One chain, drawn uniformly (no draw when there is only one)."""
        if len(self.chains) == 1:
            return self.chains[0]
        return self.chains[int(rng.integers(len(self.chains)))]


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if _BARE.fullmatch(value) and _literal(value) == value:
            return value
        return "'" + value + "'" if "'" not in value else '"' + value + '"'
    return repr(value)


def _step(name: str, overrides: dict[str, Any]) -> Step:
    spec = get_augmentation(name)
    params = spec.resolve(**overrides)
    return Step(spec.name, MappingProxyType(params))


_TOKEN = re.compile(
    r"\s*(?:(?P<quoted>'[^']*'|\"[^\"]*\")|(?P<punct>[|+(),=])|(?P<bare>[^|+(),=\s'\"]+))"
)
_BARE = re.compile(r"[^|+(),=\s'\"]+")


def _literal(text: str) -> Any:
    """A bare value: int, float, true/false, none/null, else the text itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    """(kind, value, position) for each token; kind is "name", "value" or the punctuation."""
    out = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigError(
                f"augmentation recipe {text!r}: unterminated quote at character {pos + 1}"
            )
        start = m.start(m.lastgroup)
        if m.lastgroup == "quoted":
            out.append(("quoted", m.group("quoted")[1:-1], start))
        elif m.lastgroup == "punct":
            out.append((m.group("punct"), m.group("punct"), start))
        else:
            out.append(("bare", m.group("bare"), start))
        pos = m.end()
    return out


def parse_recipe(text: str, defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Recipe:
    """Parse ``"rawboost-5|codec+noise(snr_min=0)"`` into a checked :class:`Recipe`.

    Parameters
    ----------
    text : str
        The recipe (see the module docstring for the grammar).
    defaults : mapping, optional
        Parameters to set on every step of a given augmentation unless the recipe sets
        them, e.g. ``{"noise": {"noise_dir": "/data/musan/noise"}}`` (how ``--noise-dir``
        reaches the recipe).

    Returns
    -------
    Recipe
        Every step resolved and checked: unknown names and parameters, bad values and
        missing or empty noise/RIR directories all fail here, before any audio is touched.

    Raises
    ------
    ConfigError
        A syntax error (with the character position), an unknown augmentation or
        parameter, or a bad value, in one line.

    Examples
    --------
    >>> r = parse_recipe("rawboost-5|codec(max_kbps=64)+noise")
    >>> str(r), len(r.chains), r.chains[1].steps[0].params["max_kbps"]
    ('rawboost-5|codec(max_kbps=64.0)+noise', 2, 64.0)
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("augmentation recipe is empty; e.g. 'rawboost-5|codec+noise'")
    tokens = _tokens(text)
    extra = {k: dict(v) for k, v in (defaults or {}).items()}
    chains: list[Chain] = []
    steps: list[Step] = []
    i = 0

    def fail(message: str, at: int | None = None) -> ConfigError:
        where = f" at character {at + 1}" if at is not None else " at its end"
        return ConfigError(f"augmentation recipe {text!r}: {message}{where}")

    def peek(offset: int = 0) -> tuple[str, Any, int] | None:
        return tokens[i + offset] if i + offset < len(tokens) else None

    while True:
        tok = peek()
        if tok is None or tok[0] != "bare":
            raise fail("expected an augmentation name", tok[2] if tok else None)
        name = tok[1]
        i += 1
        overrides: dict[str, Any] = {}
        if peek() is not None and peek()[0] == "(":
            i += 1
            while peek() is not None and peek()[0] != ")":
                key, eq, val = peek(), peek(1), peek(2)
                if key[0] != "bare" or eq is None or eq[0] != "=":
                    raise fail("expected KEY=VALUE", key[2])
                if val is None or val[0] not in ("bare", "quoted"):
                    raise fail(f"expected a value for {key[1]}", val[2] if val else None)
                if key[1] in overrides:
                    raise fail(f"parameter {key[1]} given twice", key[2])
                overrides[key[1]] = _literal(val[1]) if val[0] == "bare" else val[1]
                i += 3
                if peek() is not None and peek()[0] == ",":
                    i += 1
                elif peek() is None or peek()[0] != ")":
                    raise fail("expected ',' or ')'", peek()[2] if peek() else None)
            if peek() is None:
                raise fail("missing ')'")
            i += 1
        try:
            get_augmentation(name)
        except ConfigError as exc:
            raise ConfigError(f"augmentation recipe {text!r}: {exc}") from None
        steps.append(_step(name, {**extra.get(name, {}), **overrides}))
        tok = peek()
        if tok is None:
            chains.append(Chain(tuple(steps)))
            break
        if tok[0] == "+":
            i += 1
        elif tok[0] == "|":
            chains.append(Chain(tuple(steps)))
            steps = []
            i += 1
        else:
            raise fail(f"expected '+', '|' or the end after {name!r}", tok[2])
    return Recipe(tuple(chains))


def apply_chain_with_params(
    signal: np.ndarray, rng: np.random.Generator, chain: Chain
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply a chain's steps in order; also return each step's draws.

    Returns
    -------
    signal : np.ndarray
        float64, same length as the input, finite, in [-1, 1).
    drawn : list of dict
        ``{"name": ..., **draws}`` per step.

    Raises
    ------
    FeatureError
        A step broke the contract (another length, non-finite or out-of-range samples): a
        bug in that augmentation, named.
    """
    x = as_float_signal(signal)
    drawn = []
    for step in chain.steps:
        spec = get_augmentation(step.name)
        y, d = with_params(spec.fn, x, rng, **step.params)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != x.shape or not np.isfinite(y).all() or (y.size and np.abs(y).max() >= 1):
            raise FeatureError(
                f"augmentation {step.name!r} returned {y.shape[0] if y.ndim else '?'} samples "
                f"for {x.size}, or samples that are non-finite or outside [-1, 1)"
            )
        drawn.append({"name": step.name, **d})
        x = y
    return x, drawn


def apply_chain(signal: np.ndarray, rng: np.random.Generator, chain: Chain) -> np.ndarray:
    """Apply a chain's steps in order (see :func:`apply_chain_with_params`).

    Examples
    --------
    >>> chain = parse_recipe("gain+bandlimit").chains[0]
    >>> apply_chain(np.zeros(100), np.random.default_rng(0), chain).shape
    (100,)
    """
    return apply_chain_with_params(signal, rng, chain)[0]


def augment(signal: np.ndarray, rng: np.random.Generator, recipe: Recipe) -> np.ndarray:
    """Draw a chain of ``recipe`` from ``rng`` and apply it.

    Examples
    --------
    >>> y = augment(np.zeros(100), view_rng(0, "LA_T_1000137", 1), parse_recipe("gain|noise"))
    >>> y.shape
    (100,)
    """
    return apply_chain(signal, rng, recipe.draw(rng))


def view_rng(seed: int, utt_id: str, view: int) -> np.random.Generator:
    """The generator of augmented view ``view`` of utterance ``utt_id``.

    Seeded from ``(seed, view, BLAKE2b-128 of the id)``: independent of the order, the
    process and the platform (no Python ``hash``, which is salted per process).

    Examples
    --------
    >>> a = view_rng(0, "LA_T_1000137", 1).random()
    >>> b = view_rng(0, "LA_T_1000137", 1).random()
    >>> a == b, a == view_rng(0, "LA_T_1000137", 2).random()
    (True, False)
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"augment seed must be a non-negative integer, got {seed!r}")
    if isinstance(view, bool) or not isinstance(view, int | np.integer) or view < 0:
        raise ConfigError(f"view must be a non-negative integer, got {view!r}")
    digest = hashlib.blake2b(str(utt_id).encode("utf-8"), digest_size=16).digest()
    words = [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(view), *words]))
