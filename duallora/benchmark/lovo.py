"""Leave one vendor out: which vendor a run never trains on, and the held-out vendor's scores.

Two held-out vendors per cohort seed, at the plan's primary cell:

- **Canon**, the smallest vendor (one centre, M&Ms D), the same for every cohort seed;
- the cohort seed's **outlier vendor** (:func:`outlier_vendor`): the one vendor the generator
  singles out per cohort seed, the vendor it draws (uniformly over the four, with the cohort
  seed alone, whatever the shift strengths) for the unseen centre
  (``data_prep.phantoms.centres.draw_centres``, its last centre). Holding it out leaves that
  vendor wholly unseen in training. It can be Canon; the two runs are then the same run,
  trained once (one folder, ``run_folder``).

The held-out vendor's subjects of the balanced test cohort are scored by the global model
(``--holdout-vendor`` with ``--test-data``: predictions.csv split ``test_global``, client the
vendor), beside the same method's global model trained with the vendor, on the same subjects.
"""

from __future__ import annotations

from functools import lru_cache

from duallora.benchmark.plans import OUTLIER, RunSpec

CANON = "Canon"


@lru_cache(maxsize=64)
def outlier_vendor(cohort_seed: int) -> str:
    """The vendor of the generator's unseen centre for ``cohort_seed`` (module docstring)."""
    from data_prep.phantoms.centres import draw_centres
    from data_prep.phantoms.shifts import no_shift

    centres = draw_centres(no_shift(), cohort_seed)  # the unseen vendor ignores strengths
    return next(centre.vendor for centre in centres if centre.unseen)


def held_vendor(spec: RunSpec, cohort_seed: int) -> str:
    """The vendor ``spec`` holds out in this cohort ('' for none)."""
    return outlier_vendor(cohort_seed) if spec.holdout == OUTLIER else spec.holdout


def run_folder(spec: RunSpec, cohort_seed: int, train_seed: int) -> str:
    """A run's folder name: ``<spec>_seed<k>``, or for a held-out vendor
    ``<strategy>_lovo-<vendor>_seed<k>`` (one run when Canon is also the outlier)."""
    vendor = held_vendor(spec, cohort_seed)
    if not vendor:
        return f"{spec.name}_seed{train_seed}"
    return f"{spec.strategy}_lovo-{vendor}_seed{train_seed}"


def describe_outliers(cohort_seeds: tuple[int, ...]) -> dict[str, str]:
    """The outlier vendor of every cohort seed."""
    return {str(seed): outlier_vendor(seed) for seed in cohort_seeds}
