"""Augmentation registry, recipe strings, per-view RNGs, and the errors bad input gets."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from featstore.augment import (
    AUGMENTATIONS,
    Recipe,
    apply_chain,
    apply_chain_with_params,
    augment,
    get_augmentation,
    parse_recipe,
    register_augmentation,
    view_rng,
)
from featstore.errors import ConfigError, FeatureError


def test_issue_names_are_registered():
    wanted = {"rawboost-lnl", "rawboost-isd", "rawboost-ssi", "codec", "noise", "reverb"}
    wanted |= {"gain", "bandlimit"} | {f"rawboost-{i}" for i in range(1, 9)}
    assert wanted <= set(AUGMENTATIONS)


def test_importing_the_package_is_light():
    code = (
        "import sys, featstore.augment as a; a.parse_recipe('rawboost-5|noise'); "
        "print('scipy.signal' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # parsing reads signatures (imports the family modules) but not scipy.signal
    assert out.stdout.strip() == "False"


def test_defaults_come_from_the_signature():
    spec = get_augmentation("noise")
    assert dict(spec.defaults) == {
        "snr_min": 5.0,
        "snr_max": 20.0,
        "noise_dir": None,
        "colours": "white,pink,brown",
    }
    assert spec.describe(snr_min=0) == {
        "name": "noise",
        "params": {**spec.defaults, "snr_min": 0.0},
    }


def test_parse_alternatives_chains_and_overrides():
    r = parse_recipe(" rawboost-5 | codec(codecs='mp3,opus', max_kbps=64) + noise(snr_min=0)")
    assert [[s.name for s in c.steps] for c in r.chains] == [["rawboost-5"], ["codec", "noise"]]
    codec_step = r.chains[1].steps[0]
    assert codec_step.params["codecs"] == "mp3,opus" and codec_step.params["max_kbps"] == 64.0
    assert r.chains[1].steps[1].params["snr_min"] == 0.0
    assert str(r) == "rawboost-5|codec(codecs='mp3,opus',max_kbps=64.0)+noise(snr_min=0.0)"
    assert parse_recipe(str(r)) == r


def test_canonical_json_round_trip():
    r = parse_recipe("noise(snr_max=30)+reverb|gain")
    record = json.loads(r.to_json())
    assert record["recipe"] == "noise(snr_max=30.0)+reverb|gain"
    assert record["alternatives"][0][0] == {
        "name": "noise",
        "params": {"colours": "white,pink,brown", "noise_dir": None, "snr_max": 30.0,
                   "snr_min": 5.0},
    }  # fmt: skip
    again = Recipe.from_json(r.to_json())
    assert again == r and again.to_json() == r.to_json() and again.fingerprint == r.fingerprint
    # the same recipe written differently has the same record
    assert parse_recipe("noise( snr_max = 30.0 )+reverb|gain").to_json() == r.to_json()
    with pytest.raises(ConfigError, match="not an augmentation recipe record"):
        Recipe.from_json('{"x": 1}')


def test_injected_defaults_apply_unless_the_recipe_sets_them(tmp_path):
    make_noise_dir(tmp_path / "a")
    make_noise_dir(tmp_path / "b")
    r = parse_recipe(
        f"noise|noise(noise_dir={tmp_path / 'b'})|gain",
        defaults={"noise": {"noise_dir": str(tmp_path / "a")}, "reverb": {"rir_dir": "/x"}},
    )
    dirs = [c.steps[0].params.get("noise_dir") for c in r.chains]
    assert dirs == [str(tmp_path / "a"), str(tmp_path / "b"), None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("nope", "unknown augmentation 'nope'; available: rawboost-lnl"),
        ("noise+nope", "unknown augmentation 'nope'"),
        ("noise(snr=3)", "'noise' has no parameter.*snr; valid: snr_min"),
        ("noise(snr_min=abc)", "snr_min must be a number, got 'abc'"),
        ("rawboost-lnl(n_f=2.5)", "n_f must be an integer"),
        ("noise(snr_min=30)", "snr_min=30.0 is above snr_max=20.0"),
        ("noise+", "expected an augmentation name at its end"),
        ("noise||gain", "expected an augmentation name at character 7"),
        ("noise(snr_min=1", "expected ',' or '\\)' at its end"),
        ("noise(snr_min)", "expected KEY=VALUE at character 7"),
        ("noise(snr_min=1,snr_min=2)", "given twice"),
        ("noise gain", "expected '\\+', '\\|' or the end after 'noise' at character 7"),
        ("codec(codecs=flac)", "codecs='flac': unknown flac; choose from mp3"),
        ("codec(codecs='mp3", "unterminated quote"),
        ("reverb(rt60_min=0)", "rt60_min=0.0 must be > 0"),
        ("rawboost-lnl(max_freq=9000)", "max_freq=9000.0 must be <= 8000"),
        ("bandlimit(max_cutoff=8000)", "max_cutoff=8000.0 must be <="),
        ("noise(noise_dir=/no/such/dir)", "noise_dir /no/such/dir: no such directory"),
        ("reverb(rir_dir=/no/such/dir)", "'reverb': rir_dir /no/such/dir: no such directory"),
    ],
)
def test_bad_recipes_are_one_clear_config_error(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_recipe(text)
    assert "\n" not in str(info.value)


def test_unknown_codec_only_missing_ones_is_an_error(monkeypatch):
    import featstore.augment.codec as codec_module

    monkeypatch.setattr(codec_module, "available_codecs", lambda: ("mulaw",))
    with pytest.raises(ConfigError, match=r"none of codecs='opus' is supported.*available: mulaw"):
        parse_recipe("codec(codecs=opus)")
    # a missing codec among available ones is skipped, not an error
    r = parse_recipe("codec(codecs='opus,mulaw')")
    _, drawn = apply_chain_with_params(np.ones(800) * 0.1, np.random.default_rng(0), r.chains[0])
    assert drawn[0]["codec"] == "mulaw"


def test_view_rng_depends_on_seed_utterance_and_view_only():
    draws = {(s, u, k): view_rng(s, u, k).random() for s in (0, 1) for u in ("a", "b")
             for k in (1, 2)}  # fmt: skip
    assert len(set(draws.values())) == len(draws)
    assert view_rng(0, "a", 1).random() == draws[(0, "a", 1)]
    # independent of the process (Python's hash() is salted per process)
    code = "from featstore.augment import view_rng; print(view_rng(0, 'a', 1).random())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == draws[(0, "a", 1)]
    with pytest.raises(ConfigError, match="non-negative"):
        view_rng(-1, "a", 1)


def test_augment_is_deterministic_per_view_and_draws_alternatives():
    r = parse_recipe("gain(min_db=-20,max_db=-20)|bandlimit")
    x = np.random.default_rng(0).standard_normal(4000) * 0.1
    outs = [augment(x, view_rng(3, "utt", k), r) for k in range(1, 13)]
    again = [augment(x, view_rng(3, "utt", k), r) for k in range(1, 13)]
    assert all(np.array_equal(a, b) for a, b in zip(outs, again, strict=True))
    gained = [np.allclose(o, x * 0.1) for o in outs]
    assert any(gained) and not all(gained)  # both alternatives drawn


def test_apply_chain_runs_steps_in_order_and_reports_draws():
    chain = parse_recipe("gain(min_db=-6,max_db=-6)+noise(colours=white)").chains[0]
    x = np.random.default_rng(1).standard_normal(4000) * 0.1
    y, drawn = apply_chain_with_params(x, np.random.default_rng(2), chain)
    assert [d["name"] for d in drawn] == ["gain", "noise"]
    assert drawn[0]["gain_db"] == -6.0 and 5 <= drawn[1]["snr_db"] <= 20
    assert np.array_equal(y, apply_chain(x, np.random.default_rng(2), chain))


def test_user_augmentations_register_and_broken_ones_are_named():
    def invert(signal, rng, probability=1.0):
        return -signal if rng.random() < probability else signal.copy()

    spec = register_augmentation("test-invert", invert, "flip polarity", replace=True)
    assert spec.defaults == {"probability": 1.0}
    y = augment(np.full(10, 0.5), np.random.default_rng(0), parse_recipe("test-invert"))
    assert np.array_equal(y, np.full(10, -0.5))

    register_augmentation("test-short", lambda signal, rng: signal[:-1], replace=True)
    with pytest.raises(FeatureError, match="'test-short' returned 9 samples for 10"):
        augment(np.zeros(10), np.random.default_rng(0), parse_recipe("test-short"))
    with pytest.raises(ConfigError, match="already registered"):
        register_augmentation("test-invert", invert)
    with pytest.raises(ConfigError, match="needs a default"):
        register_augmentation("test-bad", lambda signal, rng, p: signal, replace=True)
    with pytest.raises(ConfigError, match="name must be"):
        register_augmentation("9bad", invert)


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["gain", "noise", "bandlimit", "rawboost-5", "reverb"]),
                st.dictionaries(st.sampled_from(["lo", "hi"]), st.integers(-30, 30), max_size=2),
            ),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_property_recipe_text_round_trips(chains):
    pieces = []
    for chain in chains:
        steps = []
        for name, args in chain:
            if name == "gain" and args:
                lo, hi = sorted(args.values()) if len(args) == 2 else (-1, 1)
                steps.append(f"gain(min_db={lo},max_db={hi})")
            else:
                steps.append(name)
        pieces.append("+".join(steps))
    text = "|".join(pieces)
    r = parse_recipe(text)
    assert len(r.chains) == len(chains)
    assert parse_recipe(str(r)) == r
    assert Recipe.from_json(r.to_json()).to_json() == r.to_json()


def make_noise_dir(path, rate=16000, seconds=0.5):
    import soundfile as sf

    path.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path / "tone.wav", 0.3 * np.sin(2 * np.pi * 500 * t), rate)
    return path


@pytest.mark.parametrize(
    "module",
    ["channel", "codec", "filtering", "levels", "noise", "rawboost", "recipe", "registry",
     "reverb", "sources", "tracing"],
)  # fmt: skip
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"featstore.augment.{module}")
    result = doctest.testmod(mod, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
