"""Two-covariance PLDA: a hand-worked two-class example, EM against known covariances, the
LLR against its closed form on synthetic Gaussian data, and the full PLDA back-end."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.backends.common import class_names, spoof_vs_bonafide
from trainer.backends.plda import PldaBackend, PredictiveClasses, TwoCovariancePLDA


def _log_normal_1d(x: float, mean: float, var: float) -> float:
    return -0.5 * ((x - mean) ** 2 / var + np.log(2 * np.pi * var))


def test_hand_worked_two_class_example():
    # B = W = 1, mean 0; bona fide saw one embedding at 2, the spoof class one at -2.
    # Posterior precision of each class mean: 1/B + n/W = 2 -> variance 1/2;
    # posterior means (0/B + 2/W) / 2 = 1 and -1; predictive variance W + 1/2 = 3/2.
    # LLR(x) = [(x + 1)^2 - (x - 1)^2] / (2 * 3/2) = 4x/3, so LLR(1.5) = 2.
    plda = TwoCovariancePLDA(np.zeros(1), np.ones((1, 1)), np.ones((1, 1)))
    pc = plda.class_models(np.array([[2.0], [-2.0]]), np.array([0, 1]))
    np.testing.assert_allclose(pc.means.ravel(), [1.0, -1.0])
    np.testing.assert_allclose(pc.covariances.ravel(), [1.5, 1.5])
    x = np.array([[1.5], [0.0], [-3.0]])
    ll = pc.log_likelihoods(x)
    assert ll[0, 0] == pytest.approx(_log_normal_1d(1.5, 1.0, 1.5))
    assert ll[0, 1] == pytest.approx(_log_normal_1d(1.5, -1.0, 1.5))
    np.testing.assert_allclose(spoof_vs_bonafide(ll), [2.0, 0.0, -4.0], atol=1e-12)


def test_hand_worked_prior_pulls_small_classes_to_the_mean():
    # With B = 4, W = 1, mean 1 and two embeddings (3, 5) of one class: precision 1/4 + 2 =
    # 9/4, mean (1/4 + 8) / (9/4) = 11/3, predictive variance 1 + 4/9 = 13/9.
    plda = TwoCovariancePLDA(np.ones(1), np.full((1, 1), 4.0), np.ones((1, 1)))
    pc = plda.class_models(np.array([[3.0], [5.0], [0.0]]), np.array([0, 0, 1]))
    assert pc.means[0, 0] == pytest.approx(11 / 3)
    assert pc.covariances[0, 0, 0] == pytest.approx(13 / 9)


def test_em_recovers_known_between_and_within_covariances():
    rng = np.random.default_rng(0)
    d, k, n = 3, 2000, 20
    a = rng.normal(size=(d, d))
    between = a @ a.T + np.eye(d)
    c = rng.normal(size=(d, d)) * 0.5
    within = c @ c.T + 0.5 * np.eye(d)
    mean = np.array([1.0, -2.0, 0.5])
    y = rng.multivariate_normal(mean, between, size=k)
    classes = np.repeat(np.arange(k), n)
    x = y[classes] + rng.multivariate_normal(np.zeros(d), within, size=k * n)
    plda = TwoCovariancePLDA.fit(x, classes)

    def rel(est, true):
        return np.linalg.norm(est - true) / np.linalg.norm(true)

    assert rel(plda.within, within) < 0.03
    assert rel(plda.between, between) < 0.1
    np.testing.assert_allclose(plda.mean, mean, atol=0.15)


def test_em_does_not_lower_the_likelihood_from_the_moment_start():
    # one EM step from the moment estimates must not make the marginal likelihood worse
    rng = np.random.default_rng(1)
    classes = np.repeat(np.arange(30), rng.integers(2, 10, 30))
    x = rng.normal(size=(classes.size, 2)) + rng.normal(size=(30, 2))[classes] * 2
    one = TwoCovariancePLDA.fit(x, classes, n_iter=1)
    many = TwoCovariancePLDA.fit(x, classes, n_iter=200)
    assert _marginal_loglik(many, x, classes) >= _marginal_loglik(one, x, classes) - 1e-9


def _marginal_loglik(plda: TwoCovariancePLDA, x: np.ndarray, classes: np.ndarray) -> float:
    """log p(all embeddings of each class) with the class mean integrated out."""
    from scipy.stats import multivariate_normal

    total = 0.0
    for c in np.unique(classes):
        xc = x[classes == c]
        n = xc.shape[0]
        cov = np.kron(np.ones((n, n)), plda.between) + np.kron(np.eye(n), plda.within)
        total += multivariate_normal(np.tile(plda.mean, n), cov).logpdf(xc.ravel())
    return total


def test_llr_matches_the_closed_form_gaussian_llr():
    # one bona fide and three spoof classes with known means and a shared within covariance:
    # with many embeddings per class, the PLDA predictive distributions tend to N(y_k, W) and
    # the LLR to log N(x; y_bona, W) - log mean_k N(x; y_k, W); the error shrinks with n.
    rng = np.random.default_rng(2)
    within = np.array([[1.0, 0.3], [0.3, 0.5]])
    centres = np.array([[2.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [0.0, -2.0]])
    pick = rng.integers(0, 4, 2000)
    test = centres[pick] + rng.multivariate_normal(np.zeros(2), within, size=pick.size)
    exact = PredictiveClasses(centres, np.repeat(within[None], 4, axis=0))
    truth = spoof_vs_bonafide(exact.log_likelihoods(test))
    spread = np.std(truth)  # ~5.4 nats
    errors = []
    for n in (500, 20000):
        classes = np.repeat(np.arange(4), n)
        x = centres[classes] + rng.multivariate_normal(np.zeros(2), within, size=4 * n)
        plda = TwoCovariancePLDA.fit(x, classes)
        ours = spoof_vs_bonafide(plda.class_models(x, classes).log_likelihoods(test))
        errors.append(np.abs(ours - truth))
    small, large = errors
    assert np.median(large) < 0.005 * spread
    assert np.quantile(large, 0.99) < 0.02 * spread
    assert np.quantile(large, 0.99) < 0.5 * np.quantile(small, 0.99)
    np.testing.assert_allclose(plda.within, within, rtol=0.02, atol=0.01)


def test_class_names_bonafide_first_attacks_sorted_unknown_attack_is_spoof():
    names, classes = class_names(np.array([0, 1, 0, 0]), np.array(["A02", "-", "-", "A01"]))
    assert names == ["bonafide", "A01", "A02", "spoof"]
    assert classes.tolist() == [2, 0, 3, 1]


def _embeddings(rng, n_per_class: int, d: int = 20):
    attacks = ["-", "A01", "A02", "A03"]
    shifts = rng.normal(size=(4, d)) * 1.5
    lab, att, rows = [], [], []
    for k, a in enumerate(attacks):
        rows.append(rng.normal(size=(n_per_class, d)) + shifts[k] + 5.0)
        lab += [1 if a == "-" else 0] * n_per_class
        att += [a] * n_per_class
    return np.concatenate(rows), np.array(lab), np.array(att)


def test_plda_backend_pipeline_is_lda_then_plda_on_normalised_embeddings():
    rng = np.random.default_rng(3)
    x, lab, att = _embeddings(rng, 300)
    b = PldaBackend.fit(x, lab, att)
    assert b.classes == ("bonafide", "A01", "A02", "A03")
    assert b.output_dim == 3  # classes - 1
    z = b.project(x)
    # the score is the closed-form LLR under the backend's own predictive distributions
    pc = PredictiveClasses(b.class_means, b.class_covariances)
    np.testing.assert_allclose(b.score(x), spoof_vs_bonafide(pc.log_likelihoods(z)))
    # length normalisation: scaling an embedding's offset from the centre changes nothing
    scaled = b.centre + 3.0 * (x[:5] - b.centre)
    np.testing.assert_allclose(b.score(scaled), b.score(x[:5]), rtol=1e-9, atol=1e-9)
    # and it separates the classes it was trained on
    s = b.score(x)
    assert s[lab == 1].min() > np.median(s[lab == 0])
    assert PldaBackend.fit(x, lab, att, lda_dim=2).output_dim == 2
