"""One prepared GPU benchmark: CineMA base at 192x192x16 with 2-block Med-DualLoRA.

    python perf/gpu.py                       # CUDA GPU, CineMA base (under 5 minutes)
    python perf/gpu.py --device cpu --tiny   # a tiny model on CPU (what the tests run)
    python perf/gpu.py --paper               # the paper-scale protocol end to end (< 9 min)
    python perf/gpu.py --paper --cpu-tiny    # the same at test sizes on CPU (the tests)

``--paper`` is ``perf/paper_scale.py`` (its docstring says what it runs and measures).

Measures training samples per second in fp32 and in bf16 autocast, each with and without the
prefix cache (frozen stem + blocks 0-9 computed once, only blocks 10-11 re-run), the peak GPU
memory of each, the one-off prefix throughput, and evaluation throughput of the plain model and
of Med-DualLoRA with both adapters unmerged and merged. Prints exactly ONE JSON line on stdout
(progress goes to stderr).

The model, adapters and trainable set come from the kit (``build_client_model``, the same call
every client makes); data are seeded random volumes, since speed does not depend on content.
Needs only torch, peft, safetensors and numpy besides this repository (found next to this file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from perf.timing import repeat_timing  # noqa: E402


def log(text: str) -> None:
    print(f"[gpu.py {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def build(tiny: bool, device: torch.device) -> tuple[Any, Any]:
    """Med-DualLoRA (global + local adapters on the last 2 blocks) exactly as a client builds it."""
    from duallora.base.config import TrainConfig
    from duallora.federated.client_model import build_client_model

    values: dict[str, Any] = {"strategy": "med_duallora", "fm": "none", "blocks": "last2",
                              # test-tiny: same structure as base (3 blocks, 2 adapted), CPU-sized
                              "model_size": "test-tiny" if tiny else "base"}
    config = TrainConfig.from_dict(values)
    model = build_client_model(config)
    model.module.to(device)
    model.params = dict(model.module.named_parameters())  # same tensors, now on the device
    return config, model


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def make_sync(device: torch.device) -> Any:
    return torch.cuda.synchronize if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def prefix_states(model: Any, images: torch.Tensor, upto: int, batch: int, device: torch.device,
                  precision: str) -> tuple[dict[str, torch.Tensor], float]:
    """The kit's ``compute_prefix`` under the same precision as training; returns the states
    and the seconds it took (one-off cost per subject, paid once for every round)."""
    from duallora.federated.prefix_cache import compute_prefix

    sync = make_sync(device)
    start = time.perf_counter()
    with autocast(device, precision):
        states = compute_prefix(model.core, images, upto, batch)
    if sync:
        sync()
    return states, time.perf_counter() - start


def train_throughput(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                     from_block: int | None, batch: int, precision: str, device: torch.device,
                     steps: int, warmup: int) -> dict[str, Any]:
    """Median time of one optimizer step (forward, class-weighted loss, backward, AdamW) on
    ``batch`` subjects, as the kit's client trains; cycles through the prepared subjects."""
    model.set_state(None, None)
    model.use_adapters(model.strategy.adapters)
    model.core.eval()  # frozen backbone in eval mode, as in the kit (LoRA dropout is 0 here)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=2e-3)
    n = labels.shape[0]
    cursor = {"start": 0}

    def step() -> torch.Tensor:
        start = cursor["start"]
        index = torch.arange(start, start + batch, device=labels.device) % n
        cursor["start"] = (start + batch) % n
        batch_inputs = {key: value[index] for key, value in inputs.items()}
        with autocast(device, precision):
            logits = model.forward(batch_inputs, from_block)
        loss = F.cross_entropy(logits.float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    reset_peak(device)
    timing, loss = repeat_timing(step, steps, warmup, sync=make_sync(device))
    return {"step_seconds": timing.to_dict(), "samples_per_second": batch / timing.median,
            "peak_memory_bytes": peak_bytes(device), "final_loss": float(loss)}


@torch.no_grad()
def eval_throughput(modules: dict[str, torch.nn.Module], images: torch.Tensor, batch: int,
                    precision: str, device: torch.device, steps: int, warmup: int
                    ) -> dict[str, Any]:
    """Forward passes per second of each module on full images, interleaved."""
    from perf.timing import interleaved_timing

    x = images[:batch]

    def forward(module: torch.nn.Module) -> Any:
        def run() -> torch.Tensor:
            with autocast(device, precision):
                return module(x)
        return run

    reset_peak(device)
    timings, _ = interleaved_timing({name: forward(m) for name, m in modules.items()}, steps,
                                    warmup, sync=make_sync(device))
    out: dict[str, Any] = {name: {"step_seconds": t.to_dict(),
                                  "samples_per_second": batch / t.median}
                           for name, t in timings.items()}
    out["merged_over_plain"] = timings["merged"].median / timings["plain"].median
    out["unmerged_over_plain"] = timings["unmerged"].median / timings["plain"].median
    out["peak_memory_bytes"] = peak_bytes(device)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from duallora.federated.adapters import merged_model
    from duallora.federated.client_model import load_foundation, model_input_size
    from duallora.federated.prepare import use_prefix_cache
    from perf.measure import randomize_lora_b

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu.py: no CUDA device visible (use --device cpu --tiny to test)")
    torch.manual_seed(0)
    started = time.perf_counter()
    log(f"building {'tiny' if args.tiny else 'CineMA base'} Med-DualLoRA on {device}")
    config, model = build(args.tiny, device)
    upto = use_prefix_cache(config, model)
    image_size, _ = model_input_size(config)
    batch = args.batch or (2 if args.tiny else 8)
    n_subjects = batch * args.distinct_batches
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((n_subjects, 2, *image_size), generator=generator).to(device)
    labels = (torch.arange(n_subjects) % 2).to(device)
    steps, warmup = (2, 1) if args.tiny else (args.steps, args.warmup)
    result: dict[str, Any] = {
        "benchmark": "gpu.py", "model": "tiny" if args.tiny else "base",
        "image_size": list(image_size), "strategy": "med_duallora", "blocks": config.blocks,
        "adapted_blocks": model.blocks, "prefix_upto_block": upto, "batch": batch,
        "trainable_params": model.count(model.trainable_names),
        "total_params": sum(int(p.numel()) for p in model.params.values()),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "train": {}, "prefix": {}}
    for precision in ("fp32", "bf16"):
        for cached in (False, True):
            key = f"{precision}_{'cached' if cached else 'full'}"
            log(f"training {key}")
            if cached and upto is not None:
                states, seconds = prefix_states(model, images, upto, batch, device, precision)
                result["prefix"][precision] = {
                    "samples_per_second": n_subjects / seconds,
                    "bytes_per_subject": int(sum(t[0].numel() * t.element_size()
                                                 for t in states.values()))}
                result["train"][key] = train_throughput(model, states, labels, upto, batch,
                                                        precision, device, steps, warmup)
                del states
            elif not cached:
                result["train"][key] = train_throughput(model, {"x": images}, labels, None,
                                                        batch, precision, device, steps, warmup)
    log("evaluation: plain, unmerged, merged")
    randomize_lora_b(model)
    model.use_adapters(("global", "local"))
    plain = load_foundation(config).to(device).eval()
    modules = {"plain": plain, "unmerged": model.core.eval(),
               "merged": merged_model(model.module, ["global", "local"]).eval()}
    result["eval"] = {precision: eval_throughput(modules, images, batch, precision, device,
                                                 steps, warmup)
                      for precision in ("fp32", "bf16")}
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perf/gpu.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU tests)")
    parser.add_argument("--batch", type=int, default=0, help="training/eval batch (default 8; "
                        "tiny: 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per setting")
    parser.add_argument("--distinct-batches", type=int, default=4,
                        help="distinct random batches cycled through")
    from perf import paper_scale

    paper_scale.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.cpu_tiny and not args.paper:
        parser.error("--cpu-tiny goes with --paper (the bare benchmark's CPU mode is --tiny)")
    if args.paper and not args.cpu_tiny and torch.device(args.device).type == "cuda" \
            and not torch.cuda.is_available():
        raise SystemExit("gpu.py --paper: no CUDA device visible (use --paper --cpu-tiny)")
    result = paper_scale.run(args) if args.paper else run(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
