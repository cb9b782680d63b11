"""Train a configuration into a folder once; later calls with the same configuration reuse it.

Shared by the notebooks' workspace (``duallora.notebooks.experiments``) and the benchmark
(``duallora.benchmark``). A finished run leaves ``kit_run.json`` holding its configuration;
an interrupted run with the same configuration is resumed (bit-identical to an uninterrupted
one); a run with another configuration is replaced. LoRA strategies also log adapter norms per
round (``adapter_norms.csv``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from duallora.federated.config import TrainConfig

RUN_MARKER = "kit_run.json"


def read_marker(path: Path) -> Any:
    """A JSON marker's content, or None when it is missing or unreadable (then: redo)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_marker(path: Path, values: dict[str, Any]) -> None:
    """Write a JSON marker atomically: a crash never leaves half a marker behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def is_finished(config: TrainConfig, out: Path) -> bool:
    marker = read_marker(Path(out) / RUN_MARKER)
    return (marker is not None and marker.get("config") == json.loads(config.to_json())
            and (Path(out) / "metrics.csv").is_file())


def ensure_trained(config: TrainConfig, out: Path, *, progress: bool = True) -> Path:
    """Train ``config`` into ``out`` unless the same configuration finished there."""
    from duallora.federated.loop import run_training
    from duallora.results.adapter_norms import NormLogger

    out = Path(out)
    if is_finished(config, out):
        return out
    wanted = json.loads(config.to_json())
    resume = read_marker(out / "config.json") == wanted
    if out.exists() and not resume:
        shutil.rmtree(out)
    logger = NormLogger(out, config)
    if not resume:
        logger.reset()
    run_training(config, out, resume=resume, progress=progress, after_round=logger)
    write_marker(out / RUN_MARKER, {"config": wanted})
    return out
