"""Sweep MAE pretraining recipes and linear-probe every snapshot (one GPU, one short lease).

    python tools/fm_sweep.py --work /tmp/sweep --out OUT --deadline-s 470 [--plan P] [--device D]

Why this exists: issue 4 asks whether the phantom FM carries more disease signal than a random
initialisation. One pretraining run answers that for one recipe at one length; this script
trains several recipes side by side (one process each, sharing the GPU) on the kit's phantom
population, snapshots each at chosen epochs, and probes every snapshot with the kit's own linear
probe on phantom client cohorts that pretraining never saw. Everything runs against a wall-clock
deadline, and results are appended to ``OUT/results.jsonl`` as they come, so a lease that ends
early still returns what was measured. The final weights of each recipe come back in
``OUT/weights_*.tar`` so the best one can be committed with its ``pretrain`` command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from data_prep.conventions import phantom_raw_roots  # noqa: E402
from duallora.commands.pretrain import build_population  # noqa: E402
from duallora.data import load_cohort_arrays  # noqa: E402
from duallora.model import build_convvit, phantom_fm_path  # noqa: E402
from duallora.model.checkpoints import (  # noqa: E402
    encoder_state,
    load_cinema_pretrained,
    save_weights,
)
from duallora.model.foundation import MAE_ENCODER_FORMAT  # noqa: E402
from duallora.model.pretrain import (  # noqa: E402
    PretrainConfig,
    epoch_mean_losses,
    load_frames,
    train_mae,
)
from duallora.model.probe import embed_all, linear_probe_scores  # noqa: E402

SIZE = "tutorial"
# Phantom client cohorts used only for probing: (scale, seed). seed 0 / 0.2 is the demo cohort,
# seed 0 / 0.03 the test fixture, seed 1 / 0.5 a larger independent one.
PROBE_COHORTS = {"demo": (0.2, 0), "fixture": (0.03, 0), "big": (0.5, 1)}
PROBE_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Variant:
    tag: str
    population: int
    snapshots: tuple[int, ...]  # 1-based epochs after which the encoder is saved and probed
    config: dict = field(default_factory=dict)  # PretrainConfig overrides


VARIANTS = [
    Variant("b8", 240, (10, 20, 40, 80), {"epochs": 80}),
    Variant("b8_norm", 240, (10, 20, 40, 80), {"epochs": 80, "norm_target": True}),
    Variant("b32", 240, (40, 75, 150, 300), {"epochs": 300, "batch_size": 32, "lr": 2e-3}),
    Variant("b32_norm", 240, (40, 75, 150, 300),
            {"epochs": 300, "batch_size": 32, "lr": 2e-3, "norm_target": True}),
    Variant("b8_dec4", 240, (10, 20, 40, 80),
            {"epochs": 80, "dec_dim": 128, "dec_depth": 4}),
    Variant("pop960_b32", 960, (10, 20, 40, 75), {"epochs": 75, "batch_size": 32, "lr": 2e-3}),
]


# --plan masking: does hiding whole slabs of slices (see duallora.model.mae.slab_token_mask)
# make the encoder learn more anatomy? Short runs, final weights only (probed afterwards).
MASKING_VARIANTS = [
    Variant("slab1_e20", 240, (), {"epochs": 20}),
    Variant("slab4_e3", 240, (), {"epochs": 3, "mask_slab": 4}),
    Variant("slab4_e20", 240, (), {"epochs": 20, "mask_slab": 4}),
    Variant("tube_e3", 240, (), {"epochs": 3, "mask_slab": 16}),
    Variant("tube_e20", 240, (), {"epochs": 20, "mask_slab": 16}),
    Variant("slab4_e20_norm", 240, (), {"epochs": 20, "mask_slab": 4, "norm_target": True}),
]

# --plan long: normalised-target recipes past 3,000 steps, judged afterwards with the per-frame
# readout (the MAE is a one-frame model; see docs/PHANTOM_FM.md). Final weights and snapshots only.
LONG_VARIANTS = [
    Variant("pop960_b32_norm", 960, (25, 50),
            {"epochs": 50, "batch_size": 32, "lr": 2e-3, "norm_target": True}),
    Variant("b128_norm", 240, (300, 600),
            {"epochs": 600, "batch_size": 128, "lr": 2e-3, "norm_target": True}),
    Variant("b32_norm_dec4", 240, (150, 300), {"epochs": 300, "batch_size": 32, "lr": 2e-3,
                                               "norm_target": True, "dec_dim": 128,
                                               "dec_depth": 4}),
    Variant("b32_norm_r90", 240, (150, 300), {"epochs": 300, "batch_size": 32, "lr": 2e-3,
                                              "norm_target": True, "mask_ratio": 0.9}),
]

# --plan smoke: the same pipeline in a minute on a CPU (tiny population, two short recipes).
SMOKE_VARIANTS = [
    Variant("b8", 12, (1, 2), {"epochs": 2}),
    Variant("pop16_slab4", 16, (1,), {"epochs": 1, "mask_slab": 4}),
]
SMOKE_COHORTS = {"fixture": (0.03, 0)}


def plan(name: str) -> tuple[list[Variant], dict[str, tuple[float, int]]]:
    """Recipes to train and cohorts to probe them on (none: only the final weights return)."""
    plans = {"recipes": (VARIANTS, PROBE_COHORTS), "masking": (MASKING_VARIANTS, {}),
             "long": (LONG_VARIANTS, {}),
             "smoke": (SMOKE_VARIANTS, SMOKE_COHORTS)}
    return plans[name]


class DeadlineReachedError(Exception):
    """Raised from the epoch hook to stop a worker at the sweep's deadline."""


def log(out: Path, message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    with (out / "log.txt").open("a") as handle:
        handle.write(line + "\n")


def append_result(out: Path, row: dict) -> None:
    with (out / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def save_snapshot(model: torch.nn.Module, path: Path) -> None:
    """Write atomically (the prober polls the folder)."""
    state = {k: v.detach().cpu() for k, v in encoder_state(model).items()}
    tmp = path.with_suffix(".tmp")
    save_weights(state, tmp, {"format": MAE_ENCODER_FORMAT, "size": SIZE})
    tmp.rename(path)


def run_worker(variant: Variant, work: Path, device: str, deadline: float) -> None:
    """Train one recipe, saving the encoder at its snapshot epochs (and at the deadline)."""
    cfg = PretrainConfig(size=SIZE, seed=0, **variant.config)
    # the orchestrator built it already; build_population only returns its path then
    frames = load_frames(build_population(variant.population, work / "cache", 0, False), cfg)
    snaps = work / "snaps"

    def hook(epoch: int, model: torch.nn.Module) -> None:
        done = epoch + 1
        late = time.time() > deadline
        if done in variant.snapshots or late:
            save_snapshot(model, snaps / f"{variant.tag}__e{done:04d}.safetensors")
        if late:
            raise DeadlineReachedError

    started = time.time()
    try:
        model, losses = train_mae(frames, cfg, progress=False, device=device, on_epoch_end=hook)
    except DeadlineReachedError:
        (work / f"{variant.tag}.done").write_text(json.dumps({"stopped": "deadline"}))
        return
    final = work / "final" / f"{variant.tag}.safetensors"
    save_snapshot(model, final)
    curve = [round(loss, 6) for loss in epoch_mean_losses(losses).values()]
    (work / f"{variant.tag}.done").write_text(json.dumps({
        "stopped": "finished", "wall_s": round(time.time() - started, 1),
        "steps": len(losses), "epoch_loss": curve, "config": asdict(cfg)}))


def build_probe_cohort(work: Path, name: str, scale: float, seed: int) -> Path:
    from data_prep.harmonize import harmonize_datasets
    from data_prep.phantoms import write_phantom_cohort

    raw = write_phantom_cohort(work / "probe" / name / "raw", scale=scale, seed=seed,
                               generator="v1")  # the sweep's recorded results are v1's
    out = work / "probe" / name / "harmonized"
    harmonize_datasets(**phantom_raw_roots(raw), out=out, seed=seed, progress=False)
    return out


def probe(model: torch.nn.Module, cohorts: dict, device: str) -> dict:
    """AUC and balanced accuracy per probe cohort (mean over the probe's fold seeds)."""
    model.to(device)
    scores = {}
    for name, (x, y) in cohorts.items():
        feats = embed_all(model, x, batch_size=64)
        runs = [linear_probe_scores(feats, y, seed=s) for s in PROBE_SEEDS]
        scores[name] = {"auc": round(sum(r[0] for r in runs) / len(runs), 4),
                        "bacc": round(sum(r[1] for r in runs) / len(runs), 4),
                        "auc_seed0": round(runs[0][0], 4)}
    return scores


def probe_weights(path: Path, cohorts: dict, device: str) -> dict:
    model = build_convvit(SIZE, seed=0)
    load_cinema_pretrained(model, path)
    return probe(model, cohorts, device)


def spawn(variant: Variant, args: argparse.Namespace, deadline: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, __file__, "--worker", variant.tag, "--work", str(args.work),
           "--out", str(args.out), "--device", args.device, "--deadline-at", str(deadline)]
    cmd += ["--plan", args.plan]
    handle = (args.work / f"{variant.tag}.log").open("w")
    return subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)


def orchestrate(args: argparse.Namespace) -> None:
    t0 = time.time()
    out, work = args.out, args.work
    variants, probe_cohorts = plan(args.plan)
    first = min(v.population for v in variants)
    for sub in ("snaps", "final", "cache"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    train_deadline = t0 + args.deadline_s - 60  # leaves time for the last probes and packing
    log(out, f"device {args.device}: "
        f"{torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'}")
    build_population(first, work / "cache", 0, False)
    log(out, f"population {first} built in {time.time() - t0:.0f} s")
    workers = {v.tag: spawn(v, args, train_deadline) for v in variants if v.population == first}
    cohorts = {}
    preset = build_convvit(SIZE).config
    for name, (scale, seed) in probe_cohorts.items():
        x, frame = load_cohort_arrays(build_probe_cohort(work, name, scale, seed),
                                      preset.image_size, preset.crop_size)
        cohorts[name] = (x, frame["label"].to_numpy())
        log(out, f"probe cohort {name}: n={len(x)}, disease={int(frame['label'].sum())}")
    if cohorts:
        for seed in (0, 1, 2):
            append_result(out, {"tag": f"random_seed{seed}", "epoch": 0,
                                **probe(build_convvit(SIZE, seed=seed), cohorts, args.device)})
        append_result(out, {"tag": "committed_fm", "epoch": 3,
                            **probe_weights(phantom_fm_path(SIZE), cohorts, args.device)})
        log(out, "baselines probed")
    big = [v for v in variants if v.population != first]
    if big and time.time() < t0 + args.deadline_s * 0.45:
        for v in big:
            build_population(v.population, work / "cache", 0, False)
            log(out, f"population {v.population} built")
            workers[v.tag] = spawn(v, args, train_deadline)
    else:
        log(out, "skipped the larger population (no time left)")
    seen: set[str] = set()

    def probe_new() -> None:
        snaps = sorted((work / "snaps").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        for snap in snaps:
            if snap.name in seen:
                continue
            seen.add(snap.name)
            tag, epoch = snap.stem.split("__e")
            append_result(out, {"tag": tag, "epoch": int(epoch), "t": round(time.time() - t0),
                                **probe_weights(snap, cohorts, args.device)})
            log(out, f"probed {snap.name}")

    stop_probing = t0 + args.deadline_s - 25
    while any(p.poll() is None for p in workers.values()) and time.time() < stop_probing:
        probe_new()
        time.sleep(2)
    probe_new()
    for tag, proc in workers.items():
        if proc.poll() is None:
            proc.kill()
        done = work / f"{tag}.done"
        info = json.loads(done.read_text()) if done.is_file() else {"stopped": "killed"}
        append_result(out, {"tag": tag, "summary": info})
        tail = (work / f"{tag}.log").read_text()[-600:]
        log(out, f"{tag}: {info.get('stopped')} {info.get('wall_s', '')} s; log tail: {tail!r}")
    finals = sorted((work / "final").glob("*.safetensors"))
    for i in range(0, len(finals), 3):
        with tarfile.open(out / f"weights_{i // 3}.tar", "w") as tar:
            for path in finals[i:i + 3]:
                tar.add(path, arcname=path.name)
    log(out, f"done in {time.time() - t0:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--deadline-s", type=float, default=470.0)
    parser.add_argument("--plan", choices=("recipes", "masking", "long", "smoke"), default="recipes",
                        help="which recipes to train (smoke: a tiny CPU run of the pipeline)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--deadline-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        variant = next(v for v in plan(args.plan)[0] if v.tag == args.worker)
        run_worker(variant, args.work, args.device, args.deadline_at)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
