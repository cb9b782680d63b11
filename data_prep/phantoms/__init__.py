"""Phantom generator (placeholder map; completed below in this branch)."""

from data_prep.phantoms.cohort_v1 import (
    SubjectSpec,
    render_phantom,
    write_phantom_cohort,
    write_population_cohort,
)

__all__ = ["SubjectSpec", "render_phantom", "write_phantom_cohort", "write_population_cohort"]
