"""Synthetic multi-vendor cine-CMR cohorts in the real raw layouts (``data_prep phantoms``).

Two generators:

- **v1** (``generator="v1"``), the original and byte-for-byte unchanged: vendors differ in
  appearance, subject count and pathology mix; the heart and its label do not depend on the
  vendor. Past results are pinned to it (the committed foundation model's pretraining
  population, the test-suite cohort, the demo).
- **v2** (the default): vendors hold 1-3 *centres*, each with its own protocol, population and
  diagnostic rule, under three shift families of strength [0, 1] (acquisition, case mix,
  annotation policy; ``shifts.toml``), an oracle headroom report, and balanced test cohorts
  with power. See docs/PHANTOMS.md.

Modules, one job each:

==================  ====================================================================
``anatomy``         parametric beating heart and thorax, rendered as a short-axis stack
``appearance``      vendor scanner styles (matrix, contrast, noise, bias, bit depth)
``cohort_v1``       the v1 cohort and population writers (``SubjectSpec``, ``render_phantom``)
``harmonized_v1``   the v1 cohort straight into the harmonized layout (the FM probe's cohort)
``workers``         render subjects in worker processes, results in task order (every writer)
``shifts``          shift strengths, ``--shift`` parsing, the ``shifts.toml`` ranges
``centres``         centres within vendors, their parameters drawn with the cohort seed
``labels``          latent subjects, their measurements, each centre's diagnostic rule
``sampling``        drawing labelled subjects at natural prevalence or to a label quota
``acquisition``     centre protocols on top of vendor appearance; ``render_v2``
``cohort``          the v2 training cohort in the raw ACDC / M&Ms / M&Ms-2 layouts
``balanced_cohorts`` balanced test / validation cohorts straight into the harmonized layout
``headroom``        oracle headroom report from latent parameters (no rendering)
``image_headroom``  image-level headroom: its rendered cohorts, merged report, seed summary
``population_v2``   unlabelled pretraining population over many draws of every v2 centre
``population_frames`` every cine frame of one subject as model input, plus per-slice areas
``figures``         arrays showing what each shift family does to one image (notebook 01)
==================  ====================================================================
"""

from __future__ import annotations

from pathlib import Path

from data_prep.phantoms.cohort_v1 import (
    SubjectSpec,
    render_phantom,
    write_population_cohort,
)
from data_prep.phantoms.cohort_v1 import write_phantom_cohort as write_phantom_cohort_v1
from data_prep.phantoms.population_v2 import population_draws, write_population_frames
from data_prep.phantoms.shifts import Shifts, default_shifts, no_shift, parse_shifts

GENERATORS = ("v1", "v2")
TEST_DIR = "test_harmonized"
VAL_DIR = "val_harmonized"
FULL_TEST_PER_VENDOR = 250   # balanced test subjects per vendor at --scale 1 (docs/PHANTOMS.md)
MIN_TEST_PER_VENDOR = 10     # 5 per label: the smallest test cohort that still has both labels


def default_test_per_vendor(scale: float) -> int:
    """Balanced test subjects per vendor that ``--scale`` implies (and as many unseen).

    The test cohort shrinks with the training cohort so that a "10%" cohort costs about 10% of
    a full one: 250 per vendor at scale 1, 25 at scale 0.1, never fewer than 10.
    """
    return max(MIN_TEST_PER_VENDOR, round(FULL_TEST_PER_VENDOR * scale))


def write_phantom_cohort(out: Path, scale: float = 1.0, seed: int = 0,
                         workers: int | None = None, *, generator: str = "v2",
                         shifts: Shifts | None = None, test_per_vendor: int = 250,
                         val_per_vendor: int = 0, unseen_test: int | None = None,
                         min_per_label: int = 3, headroom_sizes: tuple[int, int] = (4000, 2000),
                         progress: bool = True) -> Path:
    """Write a phantom cohort under ``out``; returns ``out``.

    Both generators write ``out/ACDC/database``, ``out/MnM/OpenDataset`` and ``out/MnM2``.
    ``v2`` also writes ``centres.csv``, ``cohort.json``, ``headroom.json`` and the harmonized
    balanced cohorts ``out/test_harmonized`` (``test_per_vendor`` per vendor plus
    ``unseen_test``, default the same, from the unseen centre) and, when ``val_per_vendor`` > 0,
    ``out/val_harmonized``. ``shifts`` defaults to the documented strengths of ``shifts.toml``;
    ``headroom_sizes`` are the oracle report's training and test draws per vendor.
    """
    if generator not in GENERATORS:
        raise ValueError(f"generator must be one of {GENERATORS}, got {generator!r}")
    if generator == "v1":
        if shifts is not None:
            raise ValueError("the v1 generator has no shifts")
        return write_phantom_cohort_v1(out, scale=scale, seed=seed, workers=workers)
    from data_prep.phantoms.balanced_cohorts import balanced_draws, write_harmonized_cohort
    from data_prep.phantoms.centres import draw_centres
    from data_prep.phantoms.cohort import write_cohort_info, write_training_cohort
    from data_prep.phantoms.headroom import headroom_report, write_headroom

    out = Path(out)
    shifts = shifts or default_shifts()
    centres = draw_centres(shifts, seed)
    counts = write_training_cohort(out, centres, scale, seed, workers, min_per_label)
    unseen = test_per_vendor if unseen_test is None else unseen_test
    sizes = {"training": counts}
    if test_per_vendor > 0 or unseen > 0:
        meta = write_harmonized_cohort(out / TEST_DIR, balanced_draws(
            centres, test_per_vendor, unseen, seed, "test"), "test", workers, progress)
        sizes["test"] = int(len(meta))
    if val_per_vendor > 0:
        meta = write_harmonized_cohort(out / VAL_DIR, balanced_draws(
            centres, val_per_vendor, 0, seed, "val"), "val", workers, progress)
        sizes["val"] = int(len(meta))
    write_headroom(headroom_report(shifts, seed, *headroom_sizes), out)
    write_cohort_info(out, centres, shifts, seed,
                      {"scale": scale, "sizes": sizes, "test_per_vendor": test_per_vendor,
                       "unseen_test": unseen, "val_per_vendor": val_per_vendor})
    return out


__all__ = ["GENERATORS", "Shifts", "SubjectSpec", "default_shifts", "default_test_per_vendor",
           "no_shift", "parse_shifts", "population_draws", "render_phantom",
           "write_phantom_cohort", "write_phantom_cohort_v1", "write_population_cohort",
           "write_population_frames"]
