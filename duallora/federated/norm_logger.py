"""The training loop's ``after_round`` hook: the adapter norms of each round's checkpoint.

``NormLogger`` reads the round's ``last.pt`` and appends ``||s B A||_F`` per block, module,
adapter and owner to ``RUN_DIR/adapter_norms.csv`` (the arithmetic and the columns are
``duallora.results.adapter_norms``, which the plots read).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from duallora.base.rundir import RunDir
from duallora.federated.client import split_private
from duallora.federated.strategies import get_strategy
from duallora.results.adapter_norms import LORA_KEY, NORM_COLUMNS, lora_norms


def adapter_scales(config: Any) -> dict[str, float]:
    """``alpha / rank`` of each adapter name, as ``duallora.federated`` builds them."""
    local_is_own = get_strategy(config.strategy).private_rank  # --local-rank/--local-alpha
    return {"global": config.alpha / config.rank,
            "local": (config.local_alpha / config.local_rank) if local_is_own
            else config.alpha / config.rank}


def state_norms(state: Mapping[str, Any], scales: Mapping[str, float], round_idx: int
                ) -> list[dict[str, Any]]:
    """Norms of the server's global payload (owner ``server``) and of each client's own
    adapters (its private payload completed by what it received, e.g. FedSA's shared A)."""
    rows = []
    shared = state.get("global") or {}
    for row in lora_norms(shared, scales):
        rows.append({"round": round_idx, "owner": "server", **row})
    for client, private in sorted((state.get("private") or {}).items()):
        private = split_private(private)[0]  # parameters only, not optimizer state
        if not private:
            continue
        private_adapters = {m["adapter"] for k in private if (m := LORA_KEY.search(k))}
        combined = {**shared, **private}
        for row in lora_norms(combined, scales):
            if row["adapter"] in private_adapters:
                rows.append({"round": round_idx, "owner": client, **row})
    return rows


class NormLogger:
    """``after_round`` hook: read the round's checkpoint and append its adapter norms."""

    def __init__(self, run_dir: Path, config: Any):
        self.run_dir = Path(run_dir)
        self.path = RunDir(run_dir).norms
        self.scales = adapter_scales(config)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)

    def __call__(self, round_idx: int) -> None:
        checkpoint = RunDir(self.run_dir).last_checkpoint
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        rows = pd.DataFrame(state_norms(state, self.scales, round_idx), columns=NORM_COLUMNS)
        if self.path.is_file():
            old = pd.read_csv(self.path)
            rows = pd.concat([old[old["round"] < round_idx], rows], ignore_index=True)
        rows.to_csv(self.path, index=False, float_format="%.8g")
