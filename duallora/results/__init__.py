"""From finished run directories to numbers: metrics, statistics, tables, comparisons.

The training loop writes a run directory (``duallora.base.rundir``, which also names its
files); everything that turns one back into numbers lives here, and reads it through
``run_reader`` only.

- ``metrics``        binary classification metrics (balanced accuracy, AUC, ...), NaN if undefined.
- ``stats``          bootstrap CIs, paired bootstrap / permutation tests, tests over seeds.
- ``inference``      the benchmark's statistics: two-level (seeds, subjects) bootstrap, paired
                     comparisons, Wilcoxon from 6 seeds, DeLong, Holm, TOST, MDE, seeds needed;
                     the design notes, re-exporting ``bootstrap``, ``cohort_t``, ``paired`` and
                     ``equivalence``, which do the work.
- ``evaluation``     final predictions -> the metric rows of ``metrics.csv`` (the loop calls it).
- ``adapter_norms``  ``||s B A||_F`` of every LoRA update (``federated.norm_logger`` logs them).
- ``run_reader``     ``load_run(path) -> RunResults``: the one reader of a run directory.
- ``tables``         tidy tables of several runs: metrics with CIs, costs, curves, significance.
- ``headline``       the headline: one line per run (CLI) and one row per strategy (README).
- ``compare``        results table over strategies x seeds, paired tests, Flower vs in-process.

Nothing is imported here, so ``import duallora.results.metrics`` stays light.
"""
