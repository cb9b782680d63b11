"""duallora.results.inference on planted synthetic predictions.

The generator: balanced strata (3 vendors x 2 labels), subject latent ``x ~ N(0, 1)``, and for
arm ``k`` in train seed ``t`` the logit ``beta_k (2y - 1) + vendor + x + u_t + e_it`` with a seed
effect ``u_t ~ N(0, tau^2)`` and a seed x subject effect ``e_it ~ N(0, eta^2)`` (plus an optional
cohort-level shift ``N(0, kappa^2)`` shared by a cohort's train seeds: its training data). Its
population balanced accuracy has a closed form, checked here against a huge sample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from duallora.errors import KitError
from duallora.results.inference import (
    METRICS,
    Comparison,
    Replicate,
    delong_paired,
    describe,
    estimate,
    gap_recovered,
    headroom_fraction,
    holm,
    paired_difference,
    seeds_needed,
    tost,
    weighted_metric,
    wilcoxon_over_seeds,
)
from duallora.results.metrics import binary_metrics, roc_auc

VENDOR_SHIFT = np.array([-0.3, 0.0, 0.3])
VENDOR_NAME = np.array(["Siemens", "Philips", "GE"])


def _cohort(rng: np.random.Generator, per_stratum: int) -> tuple[np.ndarray, ...]:
    """Labels, strata, vendor shift and latent x of one balanced test cohort."""
    vendor = np.tile(np.repeat(np.arange(3), per_stratum), 2)
    labels = np.repeat([0, 1], 3 * per_stratum)
    strata = np.char.add(np.char.add(VENDOR_NAME[vendor], "|"), labels.astype(str))
    return labels, strata, VENDOR_SHIFT[vendor], rng.normal(size=len(labels))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def simulate(rng: np.random.Generator, betas: dict[str, float], n_cohorts: int = 1,
             n_train: int = 5, per_stratum: int = 50, tau: float = 0.3, eta: float = 0.5,
             kappa: float = 0.0) -> list[Replicate]:
    reps = []
    for cohort in range(n_cohorts):
        labels, strata, shift, x = _cohort(rng, per_stratum)
        cohort_shift = {arm: rng.normal(0, kappa) for arm in betas}
        for train in range(n_train):
            probs = {arm: _sigmoid(beta * (2 * labels - 1) + shift + x + cohort_shift[arm]
                                   + rng.normal(0, tau) + rng.normal(0, eta, len(labels)))
                     for arm, beta in betas.items()}
            reps.append(Replicate(labels, strata, probs, cohort_seed=cohort, train_seed=train))
    return reps


def true_balanced_accuracy(beta: float, tau: float = 0.3, eta: float = 0.5,
                           kappa: float = 0.0) -> float:
    """E[BA] over seeds and subjects: P(beta + v + u + x + e >= 0) averaged with the specificity
    term, u + x + e ~ N(0, 1 + eta^2 + tau^2 + kappa^2)."""
    scale = math.sqrt(1 + eta**2 + tau**2 + kappa**2)
    terms = (sps.norm.cdf((beta + VENDOR_SHIFT) / scale)
             + sps.norm.cdf((beta - VENDOR_SHIFT) / scale))
    return float(np.mean(0.5 * terms))


def population_metrics(beta: float, tau: float = 0.3, eta: float = 0.5, n: int = 100_000
                       ) -> dict[str, float]:
    """BA and AUC on a huge sample, averaged over the seed effect by Gauss-Hermite quadrature."""
    rng = np.random.default_rng(12345)
    labels, _, shift, x = _cohort(rng, n // 6)
    noise = rng.normal(0, eta, len(labels))
    nodes, weights = np.polynomial.hermite_e.hermegauss(12)
    weights = weights / weights.sum()
    result = {"balanced_accuracy": 0.0, "auc": 0.0}
    for node, weight in zip(nodes, weights, strict=True):
        probs = _sigmoid(beta * (2 * labels - 1) + shift + x + tau * node + noise)
        values = binary_metrics(labels, probs)
        for metric in result:
            result[metric] += weight * values[metric]
    return result


# ------------------------------------------------------------------------------ metrics
def test_weighted_metrics_agree_with_binary_metrics() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(90) < 0.4).astype(int)
    probs = np.round(np.clip(0.3 * labels + 0.7 * rng.random(90), 0, 1), 2)  # ties, 0.5 hits
    weights = rng.multinomial(90, np.full(90, 1 / 90), size=25).astype(float)
    weights[0] = 1.0  # the original sample
    weights[1] = np.where(labels == 1, weights[1], 0)  # one class only: undefined metrics
    for metric in METRICS:
        vectorized = weighted_metric(weights, labels, probs, metric)
        for row, w in enumerate(weights):
            index = np.repeat(np.arange(90), w.astype(int))
            expected = binary_metrics(labels[index], probs[index])[metric]
            if math.isnan(expected):
                assert math.isnan(vectorized[row]), (metric, row)
            else:
                assert vectorized[row] == pytest.approx(expected, abs=1e-12), (metric, row)


def test_closed_form_truth_matches_a_huge_sample() -> None:
    for beta in (0.6, 1.0):
        assert population_metrics(beta)["balanced_accuracy"] == pytest.approx(
            true_balanced_accuracy(beta), abs=0.003)


# --------------------------------------------------------------------- planted effects
@pytest.mark.parametrize("metric", ["balanced_accuracy", "auc"])
def test_planted_difference_is_recovered(metric: str) -> None:
    betas = {"strong": 0.95, "weak": 0.6}
    truth = (population_metrics(betas["strong"])[metric]
             - population_metrics(betas["weak"])[metric])
    assert truth > 0.03  # the plant is a real difference
    reps = simulate(np.random.default_rng(3), betas, n_cohorts=5, n_train=1, per_stratum=100)
    result = paired_difference(reps, "strong", "weak", metric, n_boot=1000)
    assert result.n_replicates == 5 and result.n_cohorts == 5
    assert abs(result.diff - truth) < 2.5 * result.se
    assert result.low < truth < result.high
    assert result.resolvable and result.p_bootstrap < 0.01 and result.t_p < 0.05
    assert result.share_a_wins >= 0.8
    assert result.wilcoxon_p is None and "needs >= 6 cohort seeds" in result.reasons["wilcoxon_p"]
    assert result.df == 4 and result.method == "t over 5 cohort means (4 df)"
    assert "p" in describe(result, metric=metric) and "not resolvable" not in describe(result)
    if metric == "auc":
        assert result.delong_p is not None and result.delong_p < 0.01
        assert "combined DeLong over 5 replicates" in result.reasons["delong_p"]


def test_identical_arms_give_zero_and_p_one() -> None:
    reps = simulate(np.random.default_rng(4), {"a": 0.8}, n_train=4)
    reps = [Replicate(r.labels, r.strata, {"a": r.probs["a"], "b": r.probs["a"].copy()},
                      r.cohort_seed, r.train_seed) for r in reps]
    result = paired_difference(reps, "a", "b", "balanced_accuracy", n_boot=300)
    assert result.diff == 0 and result.low == 0 and result.high == 0
    assert result.p_bootstrap == 1.0 and result.p == 1.0 and result.share_a_wins == 0.5
    assert result.t_p is None and "needs >= 2 cohort seeds" in result.reasons["t_p"]
    assert not result.resolvable
    sentence = describe(result)
    assert "not resolvable at this size" in sentence and "no difference" not in sentence


def test_paired_draws_are_the_difference_of_the_arm_estimates() -> None:
    """Common random numbers: same seed -> the same resamples for every arm and call."""
    reps = simulate(np.random.default_rng(5), {"a": 0.9, "b": 0.7}, n_cohorts=2, n_train=3)
    a = estimate(reps, "a", "auc", n_boot=200, seed=7)
    b = estimate(reps, "b", "auc", n_boot=200, seed=7)
    both = paired_difference(reps, "a", "b", "auc", n_boot=200, seed=7)
    np.testing.assert_allclose(both.draws, a.draws - b.draws, atol=1e-12)
    assert both.diff == pytest.approx(a.value - b.value)


# --------------------------------------------------------------------------- coverage
@pytest.mark.parametrize(("n_cohorts", "n_train", "tau", "kappa"),
                         [(1, 8, 0.9, 0.0), (4, 2, 0.3, 0.4)])
def test_primary_interval_covers_at_the_nominal_rate(n_cohorts: int, n_train: int,
                                                     tau: float, kappa: float) -> None:
    """200 planted datasets with seed-level and subject-level noise of similar size. One cohort:
    the two-level bootstrap (dropping either level makes it cover clearly less, about 0.77-0.8
    here); several: the t over cohort means."""
    rng = np.random.default_rng(1)
    truth = true_balanced_accuracy(0.8, tau=tau, kappa=kappa)
    hits, seed_parts, sampling_parts = 0, [], []
    for dataset in range(200):
        reps = simulate(rng, {"a": 0.8}, n_cohorts, n_train, tau=tau, kappa=kappa)
        result = estimate(reps, "a", "balanced_accuracy", n_boot=300, seed=dataset)
        hits += result.low <= truth <= result.high
        seed_parts.append(result.seed_sd / math.sqrt(result.n_replicates))
        sampling_parts.append(result.sampling_se)
    # both levels matter: neither error component is negligible
    assert np.mean(seed_parts) > 0.6 * np.mean(sampling_parts)
    assert np.mean(sampling_parts) > 0.6 * np.mean(seed_parts)
    assert 0.88 <= hits / 200 <= 0.99


CLUSTERED = dict(n_train=2, tau=0.1, eta=0.3, kappa=0.6)  # between-cohort variance dominates


@pytest.mark.parametrize("n_cohorts", [3, 5])
def test_clustered_inference_keeps_coverage_and_false_positives(n_cohorts: int) -> None:
    """Planted effects with the between-cohort variance dominating (each cohort's training data
    moves each arm by N(0, 0.6^2) on the logit scale, its train seeds by N(0, 0.1^2)), 1,500
    datasets each: the t over cohort means covers the true difference at least 93% of the time
    and, with no true difference, rejects at most 6%."""
    rng = np.random.default_rng(20 + n_cohorts)
    truth = (true_balanced_accuracy(0.9, tau=0.1, eta=0.3, kappa=0.6)
             - true_balanced_accuracy(0.6, tau=0.1, eta=0.3, kappa=0.6))
    covered = false_positives = 0
    n_sims = 1500
    for _ in range(n_sims):
        planted = paired_difference(
            simulate(rng, {"a": 0.9, "b": 0.6}, n_cohorts, per_stratum=20, **CLUSTERED),
            "a", "b", "balanced_accuracy", n_boot=2)
        covered += planted.low <= truth <= planted.high
        null = paired_difference(
            simulate(rng, {"a": 0.75, "b": 0.75}, n_cohorts, per_stratum=20, **CLUSTERED),
            "a", "b", "balanced_accuracy", n_boot=2)
        false_positives += null.p < 0.05
    assert planted.df == n_cohorts - 1
    assert covered / n_sims >= 0.93
    assert false_positives / n_sims <= 0.06


def test_the_bootstrap_under_covers_with_three_cohorts() -> None:
    """Why the bootstrap is not the primary test with several cohorts: with 3 cohorts and
    600 test subjects each, so that the cohorts' training data dominate, its outer level sees 3
    values and its nominal 95% interval covers far less; the t over the same cohort means does
    not (300 datasets)."""
    rng = np.random.default_rng(30)
    truth = (true_balanced_accuracy(0.9, tau=0.1, eta=0.3, kappa=0.6)
             - true_balanced_accuracy(0.6, tau=0.1, eta=0.3, kappa=0.6))
    t_hits = boot_hits = 0
    for dataset in range(300):
        result = paired_difference(
            simulate(rng, {"a": 0.9, "b": 0.6}, 3, per_stratum=100, **CLUSTERED),
            "a", "b", "balanced_accuracy", n_boot=200, seed=dataset)
        t_hits += result.low <= truth <= result.high
        boot_hits += result.boot_low <= truth <= result.boot_high
    assert t_hits / 300 >= 0.91
    assert boot_hits / 300 <= 0.85


# ------------------------------------------------------------- seed spread vs sampling
def test_seed_sd_is_sampling_noise_when_no_seed_variance_is_planted() -> None:
    reps = simulate(np.random.default_rng(6), {"a": 0.8}, n_cohorts=10, n_train=1, tau=0,
                    eta=0)
    result = estimate(reps, "a", "balanced_accuracy", n_boot=500)
    one_replicate_sd = result.sampling_se * math.sqrt(result.n_replicates)
    assert 0.5 < result.seed_sd / one_replicate_sd < 1.6


def test_seed_sd_dominates_with_big_planted_seed_variance() -> None:
    reps = simulate(np.random.default_rng(6), {"a": 0.8}, n_cohorts=10, n_train=1, tau=1.2,
                    eta=0)
    result = estimate(reps, "a", "balanced_accuracy", n_boot=500)
    assert result.seed_sd > 3 * result.sampling_se * math.sqrt(result.n_replicates)
    assert result.se > 2 * result.sampling_se


def test_train_seeds_of_one_cohort_share_the_subject_resample() -> None:
    """Identical models on one cohort: no seed spread, and the subject error does not shrink
    with the number of train seeds (they all predicted the same subjects)."""
    rng = np.random.default_rng(8)
    one = simulate(rng, {"a": 0.8}, n_train=1, tau=0, eta=0)[0]
    reps = [Replicate(one.labels, one.strata, one.probs, 0, seed) for seed in range(6)]
    six = estimate(reps, "a", "balanced_accuracy", n_boot=1000)
    single = estimate([one], "a", "balanced_accuracy", n_boot=1000)
    assert six.seed_sd == pytest.approx(0, abs=1e-12)
    assert six.se == pytest.approx(single.se, rel=0.1)
    assert six.sampling_se == pytest.approx(single.sampling_se, rel=0.1)


# ---------------------------------------------------------------------------- Wilcoxon
def test_wilcoxon_is_refused_below_six_seeds() -> None:
    for n in (1, 3, 5):
        with pytest.raises(KitError, match=r"over N=\d < 6 seeds can never reach p < 0.05"):
            wilcoxon_over_seeds(np.linspace(0.01, 0.05, n))
    # six same-sign differences: the exact two-sided p is 2 / 2^6
    assert wilcoxon_over_seeds([0.01, 0.02, 0.03, 0.04, 0.05, 0.06]) == pytest.approx(2 / 64)


def test_wilcoxon_runs_over_cohort_means_never_over_pseudo_replicates() -> None:
    betas = {"a": 0.9, "b": 0.6}
    one_cohort = simulate(np.random.default_rng(9), betas, n_train=6)
    pseudo = paired_difference(one_cohort, "a", "b", "balanced_accuracy", n_boot=200)
    assert pseudo.wilcoxon_p is None  # six train seeds of one cohort are not six replicates
    assert pseudo.reasons["wilcoxon_p"].startswith("needs >= 6 cohort seeds (have 1)")
    five = simulate(np.random.default_rng(9), betas, n_cohorts=5, n_train=2)
    assert paired_difference(five, "a", "b", "balanced_accuracy", n_boot=200).wilcoxon_p is None
    six = simulate(np.random.default_rng(9), betas, n_cohorts=6, n_train=2)
    high = paired_difference(six, "a", "b", "balanced_accuracy", n_boot=200)
    assert high.wilcoxon_p is not None and 0 < high.wilcoxon_p <= 1
    assert "wilcoxon_p" not in high.reasons


# -------------------------------------------------------------------------------- Holm
def test_holm_matches_a_hand_worked_family() -> None:
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.2, "e": None})
    assert list(adjusted) == ["a", "b", "c", "d", "e"]
    # sorted 0.01, 0.03, 0.04, 0.2 -> x4, x3, x2, x1 = 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.2
    expected = {"a": 0.04, "b": 0.09, "c": 0.09, "d": 0.2}
    for name, value in expected.items():
        assert adjusted[name] == pytest.approx(value)
    assert adjusted["e"] is None
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_holm_is_monotone_and_never_below_the_raw_p() -> None:
    rng = np.random.default_rng(10)
    raw = {f"h{i}": float(p) for i, p in enumerate(rng.random(12) ** 3)}
    adjusted = holm(raw)
    order = sorted(raw, key=raw.get)
    values = [adjusted[name] for name in order]
    assert values == sorted(values)
    assert all(raw[name] <= adjusted[name] <= 1 for name in raw)


# ------------------------------------------------------------------------------ DeLong
def test_delong_matches_a_large_paired_bootstrap() -> None:
    rng = np.random.default_rng(11)
    labels = np.repeat([0, 1], 200)
    latent = rng.normal(size=400) + 1.2 * labels
    probs_a = np.round(_sigmoid(latent + rng.normal(0, 0.6, 400)), 2)  # ties
    probs_b = _sigmoid(0.7 * latent + rng.normal(0, 0.9, 400))
    result = delong_paired(labels, probs_a, probs_b)
    assert result["auc_a"] == pytest.approx(roc_auc(labels, probs_a), abs=1e-12)
    assert result["auc_b"] == pytest.approx(binary_metrics(labels, probs_b)["auc"], abs=1e-12)
    assert result["diff"] == pytest.approx(result["auc_a"] - result["auc_b"])
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    diffs = []
    for _ in range(3000):  # resample within class, as DeLong conditions on both class sizes
        index = np.r_[rng.choice(positives, 200), rng.choice(negatives, 200)]
        diffs.append(roc_auc(labels[index], probs_a[index])
                     - roc_auc(labels[index], probs_b[index]))
    assert result["se"] == pytest.approx(np.std(diffs, ddof=1), rel=0.15)
    assert result["p"] == pytest.approx(2 * sps.norm.sf(abs(result["z"])))


def test_delong_of_one_replicate_is_the_paired_test() -> None:
    reps = simulate(np.random.default_rng(12), {"a": 0.9, "b": 0.7}, n_train=1)
    result = paired_difference(reps, "a", "b", "auc", n_boot=200)
    expected = delong_paired(reps[0].labels, reps[0].probs["a"], reps[0].probs["b"])["p"]
    assert result.delong_p == pytest.approx(expected)
    assert paired_difference(reps, "a", "b", "balanced_accuracy", n_boot=50).delong_p is None


# -------------------------------------------------------------------------------- TOST
def test_tost_equivalent_arms_and_a_planted_difference() -> None:
    same = simulate(np.random.default_rng(13), {"a": 0.8, "b": 0.8}, n_train=6,
                    per_stratum=400, tau=0.1)
    result = tost(same, "a", "b", "balanced_accuracy", 0.05, n_boot=500)
    assert result.equivalent and result.p_tost < 0.05
    assert -0.05 < result.low90 < result.diff < result.high90 < 0.05
    apart = simulate(np.random.default_rng(13), {"a": 1.2, "b": 0.75}, n_train=6,
                     per_stratum=400, tau=0.1)
    assert true_balanced_accuracy(1.2) - true_balanced_accuracy(0.75) == pytest.approx(0.1,
                                                                                       abs=0.02)
    result = tost(apart, "a", "b", "balanced_accuracy", 0.05, n_boot=500)
    assert not result.equivalent and result.p_tost > 0.05


# ------------------------------------------------------------------------ seeds needed
def test_seeds_needed_matches_hand_value_and_a_simulation() -> None:
    n = seeds_needed(0.05, delta=0.05)
    assert n == 10  # effect size 1: the textbook paired-t sample size at 0.8 power
    rng = np.random.default_rng(14)

    def simulated_power(size: int) -> float:
        diffs = rng.normal(0.05, 0.05, size=(20000, size))
        t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(size))
        return float(np.mean(np.abs(t) > sps.t.ppf(0.975, size - 1)))

    assert simulated_power(n) >= 0.79 and simulated_power(n - 1) < 0.8
    grid = [seeds_needed(sd) for sd in (0.01, 0.02, 0.04, 0.08, 0.16)]
    assert grid == sorted(grid) and grid[0] < grid[-1]
    assert seeds_needed(0.0) == 2
    with pytest.raises(KitError, match="more than max_n"):
        seeds_needed(1.0, delta=0.01, max_n=50)


# ------------------------------------------------------------ shares and the sentence
def test_gap_recovered_and_uninformative_gap() -> None:
    betas = {"head": 0.3, "two": 0.85, "all": 1.0}
    reps = simulate(np.random.default_rng(15), betas, n_train=6, per_stratum=100)
    head, two, full = (estimate(reps, arm, "balanced_accuracy", n_boot=500, seed=3)
                       for arm in ("head", "two", "all"))
    share = gap_recovered(two, full, head)
    truth = ((true_balanced_accuracy(0.85) - true_balanced_accuracy(0.3))
             / (true_balanced_accuracy(1.0) - true_balanced_accuracy(0.3)))
    assert share.reason is None and share.low < truth < share.high
    assert share.value == pytest.approx((two.value - head.value) / (full.value - head.value))
    flat = simulate(np.random.default_rng(15), {"head": 0.8, "two": 0.8, "all": 0.8}, n_train=6)
    head, two, full = (estimate(flat, arm, "balanced_accuracy", n_boot=500, seed=3)
                       for arm in ("head", "two", "all"))
    share = gap_recovered(two, full, head)
    assert share.value is None and share.reason.startswith("uninformative: head-only is as good")
    # a negative gap (head-only beats all blocks) is no gap to recover, not a ratio of negatives
    worse = simulate(np.random.default_rng(15), {"head": 1.0, "two": 0.3, "all": 0.4},
                     n_train=6, per_stratum=100)
    head, two, full = (estimate(worse, arm, "balanced_accuracy", n_boot=500, seed=3)
                       for arm in ("head", "two", "all"))
    assert (two.value - head.value) / (full.value - head.value) > 0  # what it used to return
    share = gap_recovered(two, full, head)
    assert share.value is None and "head-only probe beats all blocks" in share.reason
    other_seed = estimate(flat, "two", "balanced_accuracy", n_boot=500, seed=4)
    with pytest.raises(KitError, match="same n_boot and seed"):
        gap_recovered(other_seed, full, head)


def test_headroom_fraction() -> None:
    assert headroom_fraction(0.02, 0.08).value == pytest.approx(0.25)
    tiny = headroom_fraction(0.002, 0.004)
    assert tiny.value is None and "no headroom" in tiny.reason
    reps = simulate(np.random.default_rng(16), {"base": 0.5, "method": 0.8, "oracle": 1.1},
                    n_train=6)
    gain = paired_difference(reps, "method", "base", "balanced_accuracy", n_boot=500)
    room = paired_difference(reps, "oracle", "base", "balanced_accuracy", n_boot=500)
    share = headroom_fraction(gain, room)
    assert share.value == pytest.approx(gain.diff / room.diff)
    assert share.low < share.value < share.high


def test_describe_never_says_no_difference() -> None:
    common = dict(arm_a="a", arm_b="b", metric="auc", se=0.01, seed_sd=0.01, sampling_se=0.01,
                  t_p=None, wilcoxon_p=None, share_a_wins=0.5, n_replicates=3, n_cohorts=1,
                  n_subjects=300, value_a=0.8, value_b=0.8, level=0.95, alpha=0.05, power=0.8)
    hit = Comparison(diff=0.041, low=0.012, high=0.070, p_bootstrap=0.006, mde=0.028,
                     resolvable=True, **common)
    assert describe(hit, metric="auc").endswith("= +0.041 [0.012, 0.070], p=0.006")
    miss = Comparison(diff=0.012, low=-0.03, high=0.05, p_bootstrap=0.5, mde=0.07,
                      resolvable=False, **common)
    sentence = describe(miss, metric="auc")
    assert sentence.endswith("+0.012 [-0.030, 0.050]: not resolvable at this size (minimum "
                             "detectable difference 0.070)")
    with pytest.raises(KitError, match="not 'balanced_accuracy'"):
        describe(miss, metric="balanced_accuracy")


def test_mde_is_the_power_formula() -> None:
    reps = simulate(np.random.default_rng(17), {"a": 0.8, "b": 0.75}, n_train=3)
    result = paired_difference(reps, "a", "b", "balanced_accuracy", n_boot=300)
    assert result.mde == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * result.se)
    # over cohort means: the same t as the interval, with cohorts - 1 degrees of freedom
    reps = simulate(np.random.default_rng(17), {"a": 0.8, "b": 0.75}, n_cohorts=3, n_train=2)
    result = paired_difference(reps, "a", "b", "balanced_accuracy", n_boot=300)
    assert result.df == 2
    assert result.mde == pytest.approx((sps.t.ppf(0.975, 2) + sps.t.ppf(0.8, 2)) * result.se)
    assert result.high - result.diff == pytest.approx(sps.t.ppf(0.975, 2) * result.se)


# ----------------------------------------------------------------------------- inputs
def test_bad_inputs_are_one_line_kit_errors() -> None:
    reps = simulate(np.random.default_rng(18), {"a": 0.8}, n_train=2)
    with pytest.raises(KitError, match="arm 'b' missing in replicate"):
        estimate(reps, "b", "auc")
    with pytest.raises(KitError, match="unknown metric 'f1'"):
        estimate(reps, "a", "f1")
    other = simulate(np.random.default_rng(19), {"a": 0.8}, n_train=1)[0]
    clash = [reps[0], Replicate(other.labels[::-1], other.strata[::-1], other.probs, 0, 5)]
    with pytest.raises(KitError, match="cohort_seed=0 have different test subjects"):
        estimate(clash, "a", "auc")
    with pytest.raises(KitError, match="arm 'a' has 3 predictions for"):
        Replicate(np.array([0, 1]), np.array(["x", "y"]), {"a": np.zeros(3)})


# ------------------------------------------------------------- the benchmark's H2 gate
def test_h2_runs_tost_only_when_both_arms_beat_the_head_only_probe() -> None:
    """Two arms at chance are "equivalent" to any margin: that must never read as a verdict."""
    from duallora.benchmark.analysis import h2_section
    from duallora.benchmark.plans import get_plan

    plan = get_plan("test")
    near_chance = simulate(np.random.default_rng(40), {
        "med_duallora": 0.05, "med_duallora_all": 0.05, "head_only_probe": 0.6},
        n_cohorts=3, n_train=2, per_stratum=60)
    section = h2_section(plan, near_chance)
    assert "does not beat the head-only probe" in section["tost"]["uninformative"]
    assert "equivalent" not in section["tost"]
    learned = simulate(np.random.default_rng(41), {
        "med_duallora": 1.2, "med_duallora_all": 1.2, "head_only_probe": 0.2},
        n_cohorts=3, n_train=2, per_stratum=60)
    section = h2_section(plan, learned)
    assert all(check["beats"] for check in section["beats_head_only"])
    assert section["tost"]["margin"] == plan.margin and "equivalent" in section["tost"]


# ------------------------------------------------------------------------- calibration
def test_brier_and_ece_match_their_definitions_and_a_calibrated_model() -> None:
    rng = np.random.default_rng(50)
    probs = rng.random(4000)
    labels = (rng.random(4000) < probs).astype(int)  # calibrated by construction
    weights = np.ones((1, 4000))
    brier = weighted_metric(weights, labels, probs, "brier")[0]
    assert brier == pytest.approx(np.mean((probs - labels) ** 2))
    ece = weighted_metric(weights, labels, probs, "ece")[0]
    bins = np.minimum((probs * 10).astype(int), 9)
    by_hand = sum(abs(labels[bins == b].mean() - probs[bins == b].mean()) * np.mean(bins == b)
                  for b in range(10))
    assert ece == pytest.approx(by_hand) and ece < 0.03
    overconfident = np.clip(1.6 * (probs - 0.5) + 0.5, 0.0, 1.0)
    assert weighted_metric(weights, labels, overconfident, "ece")[0] > 0.08
    # resample multiplicities agree with repeating subjects
    index = rng.integers(0, 4000, 4000)
    counts = np.bincount(index, minlength=4000)[None, :].astype(float)
    assert weighted_metric(counts, labels, probs, "brier")[0] == pytest.approx(
        np.mean((probs[index] - labels[index]) ** 2))
    reps = [Replicate(labels, np.where(labels == 1, "v|1", "v|0"), {"a": probs}, 0, 0)]
    assert estimate(reps, "a", "ece", n_boot=50).value == pytest.approx(ece)
