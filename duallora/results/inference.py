"""Inference for the benchmark: estimates, paired comparisons and tests that match its design.

Design
------
The benchmark compares training strategies ("arms") on a shared, balanced test cohort. Its unit
is the *replicate*: one ``(cohort_seed, train_seed)`` pair. Inside a replicate every arm has
predicted P(disease) for the same test subjects, so arms are compared *paired*. A cohort seed
fixes the subjects (replicates with the same cohort seed must have the same subjects, in the same
order: checked); a train seed fixes the training randomness. A number therefore varies for two
reasons, and this module reports both separately:

- **seed spread** (``seed_sd``): the sd over replicates of the per-replicate metric (or of the
  per-replicate paired difference): how much another training run would move it;
- **test-sampling error** (``sampling_se``): the standard error of the mean over replicates due to
  the finite test subjects alone, from resampling subjects within strata (vendor x label) with the
  trained models held fixed. With one replicate per cohort seed it is
  ``sqrt(mean_r var_r / n_reps)`` (``var_r`` the within-replicate bootstrap variance); replicates
  that share a cohort share subjects, so their sampling errors are correlated and are combined
  cohort by cohort (``sqrt(sum_c (T_c / n_reps)^2 var_c)``, ``var_c`` the bootstrap variance of
  the cohort's mean over its ``T_c`` replicates), which reduces to the same formula.

The interval of every number comes from a **two-level bootstrap**. Outer level: replicates drawn
with replacement (with several cohort seeds: cohort seeds first, then train seeds within each drawn
cohort). Inner level: within each drawn cohort, subjects drawn with replacement within strata; the
same subject resample serves every train seed of that cohort (they predicted the same subjects),
and -- for a paired difference -- both arms. The statistic of one bootstrap draw is the mean over
its drawn replicates; a replicate draw whose metric is undefined (AUC with one class) is ignored,
as in ``duallora.results.stats``. ``se`` is the sd of that bootstrap distribution and the interval
its percentiles. Two properties to know when reading it:

- with one cohort seed the interval is conditional on that cohort's training data (the outer level
  can only see train-seed spread); with several, the cohort resample already contains the test
  subjects' variation, so the inner level counts it a second time and the interval is somewhat
  conservative;
- with few replicates the outer bootstrap under-states seed spread by ``(n-1)/n`` and its
  percentile interval is too narrow (a bootstrap of 3 values is a poor interval): read it with the
  paired t over seeds, which is exact for normal seed effects.

Draws are generated from ``seed`` and the replicates' structure only (never from the arm), so
``estimate(reps, "a")``, ``estimate(reps, "b")`` and ``paired_difference(reps, "a", "b")`` called
with the same ``seed`` and ``n_boot`` see the same resamples (common random numbers): their stored
draws line up, which is what ``gap_recovered`` and ``headroom_fraction`` use for their intervals.

Inference over cohort means (the primary test)
----------------------------------------------
Replicates that share a cohort seed share its training subjects and its test subjects, so they
are not independent: ``full`` has 18 replicates from 3 cohorts, and a test that counts 18 would
claim a precision the design does not have. With two or more cohort seeds every primary number
is therefore computed over the **cohort means** (the mean over a cohort's train seeds of the
per-replicate value, or paired difference): the estimate is their mean, its interval and p a
one-sample t with ``cohorts - 1`` degrees of freedom, and the minimum detectable difference
``(t_{1-alpha/2, df} + t_{power, df}) * se`` comes from the same t. Cohort means are independent
and, being means over hundreds of test subjects, close to normal, so this is exact up to that
approximation; ``tests/test_inference.py`` checks its coverage and false-positive rate by
simulation at 3 and 5 cohorts. The two-level bootstrap stays beside it (``p_bootstrap``,
``boot_low``/``boot_high``): with few cohorts its outer level sees only a handful of values and
its nominal 95% interval covers about 75% when the between-cohort variance dominates, so it is
never the primary test when there is more than one cohort. With a single cohort seed there is no
between-cohort spread to estimate: the primary numbers are the bootstrap's, *conditional on that
cohort's training data*, and ``method`` says so.

Other tests
-----------
- a Wilcoxon signed-rank test over **cohort means**, only from 6 cohorts: with ``N`` values its
  smallest two-sided p is ``2 / 2^N`` (0.0625 for 5), so below 6 it can never reach p < 0.05.
  It is never computed over replicates that share a cohort (pseudo-replicates).
- For AUC also DeLong's test (``delong_paired``: the paired DeLong 1988 covariance computed with
  the O(n log n) midrank algorithm of Sun & Xu 2014). With one replicate it is the ordinary paired
  DeLong test. With several it is *combined*: the mean over replicates of the AUC difference, its
  variance from DeLong's covariance of all the cohort's AUCs (shared subjects) summed over cohort
  seeds (independent subjects). It is conditional on the trained models -- test sampling only, no
  seed spread -- so it answers "do these trained models differ on this population", not "does
  the strategy train better"; the primary test answers the latter.
- ``holm``: a family of comparisons (one primary comparator against each baseline) is corrected by
  Holm's step-down method on the primary ``p``: it controls the family-wise error rate like
  Bonferroni under any dependence between the tests, and is uniformly more powerful.
- ``tost``: equivalence (two one-sided tests) through the ``1 - 2 alpha`` interval of the primary
  method. It is only informative when both arms learned something: ``analysis`` runs it only
  when both beat the head-only probe, and otherwise reports why it did not.

Power
-----
``mde`` (minimum detectable difference) is the true difference that a two-sided level-``alpha``
test with this standard error detects with probability ``power``: ``(t_{1-alpha/2, df} +
t_{power, df}) * se`` over cohort means, ``(z_{1-alpha/2} + z_power) * se`` (2.80 se) for one
cohort. It is printed next to every unresolved result: an interval that includes 0 says "not
resolvable at this size", never "no difference". ``seeds_needed`` gives the independent
replicates (cohorts) a t-test needs to detect ``delta`` given their sd (noncentral t).

Metrics are those of ``duallora.results.metrics.binary_metrics`` (threshold 0.5, NaN when
undefined), computed from resample *multiplicities* (a weight matrix) so that thousands of
resamples are a few matrix operations.

Where it lives
--------------
This module is the design above and the names the benchmark and the notebooks use; the work is
done in ``bootstrap`` (replicates, the two-level bootstrap, vectorized metrics), ``cohort_t``
(t over cohort means, MDE, Wilcoxon, seeds needed, Holm), ``paired`` (estimates, paired
differences, DeLong) and ``equivalence`` (TOST, shares of gaps, ``describe``).
"""

from duallora.results.bootstrap import (
    ALL_METRICS,
    CALIBRATION,
    ECE_BINS,
    METRICS,
    THRESHOLD,
    Replicate,
    weighted_metric,
)
from duallora.results.cohort_t import (
    MIN_WILCOXON,
    CohortT,
    cohort_means,
    cohort_t,
    holm,
    seeds_needed,
    wilcoxon_over_seeds,
)
from duallora.results.equivalence import (
    MIN_HEADROOM,
    Equivalence,
    Share,
    describe,
    gap_recovered,
    headroom_fraction,
    tost,
)
from duallora.results.paired import (
    CONDITIONAL,
    Comparison,
    Estimate,
    delong_paired,
    estimate,
    paired_difference,
)

__all__ = [
    "ALL_METRICS", "CALIBRATION", "CONDITIONAL", "ECE_BINS", "METRICS", "MIN_HEADROOM",
    "MIN_WILCOXON", "THRESHOLD", "CohortT", "Comparison", "Equivalence", "Estimate", "Replicate",
    "Share", "cohort_means", "cohort_t", "delong_paired", "describe", "estimate",
    "gap_recovered", "headroom_fraction", "holm", "paired_difference", "seeds_needed", "tost",
    "weighted_metric", "wilcoxon_over_seeds",
]
