"""Drawing labelled subjects from centres: natural prevalence, or to a label quota.

Labels come from each centre's annotation policy, so a balanced cohort cannot be drawn by
pathology code: subjects are drawn one by one from the centre (its own pathology mix and
population) and kept while their label's quota is open. Attempt ``k`` of a purpose at a centre
always has the same seed, so a cohort is reproduced exactly from the cohort seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_prep.phantoms.centres import Centre
from data_prep.phantoms.labels import Latent, annotate, draw_latent, subject_seed
from duallora.errors import KitError

MAX_ATTEMPTS_PER_SUBJECT = 200


@dataclass(frozen=True)
class Draw:
    """A drawn subject as its centre labelled it."""

    centre: Centre
    latent: Latent
    label: int
    code: str  # the pathology code the centre records


def allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` over ``weights`` by largest remainder (sums exactly to ``total``)."""
    norm = sum(weights)
    raw = [total * w / norm for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[:total - sum(counts)]:
        counts[i] += 1
    return counts


def draw_one(centre: Centre, seed: int, purpose: str, k: int) -> Draw:
    latent = draw_latent(centre, subject_seed(seed, purpose, centre.name, k))
    label, code = annotate(latent, centre, centre.dataset)
    return Draw(centre, latent, label, code)


def draw_natural(centre: Centre, n: int, seed: int, purpose: str) -> list[Draw]:
    """``n`` subjects at the centre's own prevalence (what its referral stream brings)."""
    return [draw_one(centre, seed, purpose, k) for k in range(n)]


def draw_quota(centre: Centre, quota: dict[int, int], seed: int, purpose: str) -> list[Draw]:
    """Subjects until ``quota[label]`` of each label are drawn; order of drawing is kept."""
    need = dict(quota)
    kept: list[Draw] = []
    limit = MAX_ATTEMPTS_PER_SUBJECT * max(1, sum(quota.values()))
    k = 0
    while any(n > 0 for n in need.values()):
        if k >= limit:
            raise KitError(f"centre {centre.name}: could not draw {quota} labels for {purpose} "
                           f"in {limit} attempts (its mix and rule almost never give one label)")
        draw = draw_one(centre, seed, purpose, k)
        k += 1
        if need.get(draw.label, 0) > 0:
            need[draw.label] -= 1
            kept.append(draw)
    return kept


def draw_balanced(centres: list[Centre], n: int, seed: int, purpose: str) -> list[Draw]:
    """``n`` subjects over ``centres``, half NOR, half disease (``n // 2`` NOR when odd).

    Each label's count is shared over the centres by centre size, so the group as a whole is
    balanced exactly even when a centre gets a single subject.
    """
    sizes = [float(c.size) or 1.0 for c in centres]
    n_nor = n // 2
    draws: list[Draw] = []
    for centre, k_nor, k_dis in zip(centres, allocate(n_nor, sizes),
                                    allocate(n - n_nor, sizes), strict=True):
        draws += draw_quota(centre, {0: k_nor, 1: k_dis}, seed, purpose)
    return draws
