"""The v2 pretraining population and chunked, resumable pretraining on it.

Kept small (test-tiny's 32 x 32 x 16 input, two rendered subjects, a few training steps): the
whole file runs in well under a minute on one core.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data_prep.phantoms.population_v2 import (
    centre_set_seed,
    population_draws,
    shard_path,
    write_population_frames,
)
from duallora.cli import main
from duallora.errors import KitError
from duallora.model import load_foundation_model, read_state_dict
from duallora.model.mae import slab_token_mask
from duallora.model.pretrain import (
    PretrainConfig,
    build_mae,
    lr_at,
    random_shift,
    run_mae,
    train_mae,
)

TINY = (32, 32, 16)  # the test-tiny preset's input
CROP = 128


def _write(out: Path, subjects: list, workers: int) -> dict:
    return write_population_frames(out, subjects, workers, progress=False, image_size=TINY,
                                   crop_size=CROP, shard_subjects=1, seed=0, n_centre_sets=2)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, Path, Path]:
    """Two rendered subjects (one shard each), written with one and with two workers.

    Two Siemens subjects: its small matrices render fastest (a Philips cine takes ~4x longer).
    """
    base = tmp_path_factory.mktemp("population")
    subjects = [s for s in population_draws(20, seed=0, n_centre_sets=2)
                if s.draw.centre.vendor == "Siemens"][:2]
    _write(base / "one", subjects, workers=1)
    _write(base / "two", subjects, workers=2)
    return subjects, base / "one", base / "two"


def _contents(root: Path) -> dict[str, object]:
    out: dict[str, object] = {name: (root / name).read_text()
                              for name in ("index.csv", "population.json")}
    for path in sorted(root.glob("shard_*.npz")):
        with np.load(path) as data:
            out.update({f"{path.name}:{key}": data[key].tobytes() for key in data.files})
    return out


def test_draws_are_unlabelled_and_cover_every_centre_of_each_set() -> None:
    subjects = population_draws(40, seed=3, n_centre_sets=2)
    assert len(subjects) == 40
    assert {s.draw.label for s in subjects} == {-1} and {s.draw.code for s in subjects} == {""}
    for index in (0, 1):
        names = {s.draw.centre.name for s in subjects if s.centre_set == index}
        assert any(name.endswith("UNSEEN") for name in names)  # unseen centres too
        assert len(names) == 9
    assert centre_set_seed(0, 0) == -1 and centre_set_seed(3, 1) == -3002  # never a cohort seed
    assert [s.subject_id for s in subjects] == [s.subject_id for s in
                                                population_draws(40, 3, n_centre_sets=2)]
    with pytest.raises(KitError, match="--centre-sets"):
        population_draws(4, 0, n_centre_sets=0)


def test_writer_is_identical_for_any_worker_count_and_resumes_a_deleted_shard(
        population: tuple[list, Path, Path]) -> None:
    subjects, one, two = population
    assert _contents(one) == _contents(two)
    info = json.loads((one / "population.json").read_text())
    assert info["complete"] and info["sizes"]["subjects"] == 2 and info["generator"] == "v2"
    assert "label" not in (one / "index.csv").read_text().split("\n")[0]
    index = pd.read_csv(one / "index.csv")
    with np.load(shard_path(one, 0)) as data:
        assert data["frames"].dtype == np.uint8 and data["frames"].shape[1:] == TINY
        assert data["areas"].dtype == np.int16 and data["areas"].shape[1:] == (3, TINY[2])
        assert len(data["frames"]) == index["n_frames"].iloc[0]
    before = _contents(one)
    kept = shard_path(one, 0).stat().st_mtime_ns
    shard_path(one, 1).unlink()
    _write(one, subjects, workers=1)
    assert _contents(one) == before
    assert shard_path(one, 0).stat().st_mtime_ns == kept  # a finished shard is not redone
    with pytest.raises(KitError, match="differs in seed"):
        write_population_frames(one, subjects, 1, progress=False, image_size=TINY,
                                crop_size=CROP, shard_subjects=1, seed=1, n_centre_sets=2)


def test_frames_match_load_pair_of_the_harmonized_ed_es(population: tuple[list, Path, Path],
                                                        tmp_path: Path) -> None:
    """The population's frames are what fine-tuning sees, up to the intensity window.

    Harmonized ED/ES take their percentile window over ED and ES; the population takes it over
    every frame (one scale per cine). With the window over ED and ES the frames equal
    ``load_pair`` exactly; with the population's window, the geometry (via the masks) is
    identical and the intensities are a near-linear rescaling.
    """
    from data_prep.phantoms.acquisition import render_v2
    from data_prep.phantoms.balanced_cohorts import write_harmonized_cohort
    from data_prep.phantoms.population_frames import (
        cine_to_model_input,
        resize_masks,
        slice_areas,
    )
    from data_prep.volumes import Frames
    from duallora.data import _load_volume, centre_crop, load_pair

    subjects, one, _ = population
    draw = subjects[0].draw
    row = write_harmonized_cohort(tmp_path, [draw], "test", workers=1, progress=False).iloc[0]
    pair = np.rint(load_pair(tmp_path, row, TINY, CROP) * 255).astype(np.uint8)
    scan = render_v2(draw, "all")
    ed, es = scan.ed_frame, scan.es_frame
    affine = scan.phantom.affine.astype(np.float32).astype(np.float64)
    zooms = Frames(scan.phantom.cine[..., 0], scan.phantom.cine[..., 1], None, None,
                   affine).zooms
    same_window = cine_to_model_input(scan.phantom.cine.astype(np.float32), scan.phantom.labels,
                                      zooms, ed, es, TINY, CROP, window_frames=(ed, es))
    assert np.array_equal(same_window.frames[[ed, es]], pair)

    with np.load(shard_path(one, 0)) as data:
        frames, areas = data["frames"], data["areas"]
    assert np.array_equal(areas, same_window.areas)  # the window never moves the masks
    for frame, key in ((ed, "ed_seg_path"), (es, "es_seg_path")):
        seg = centre_crop(_load_volume(tmp_path / row[key], row["subject_id"]), CROP)
        assert np.array_equal(areas[frame], slice_areas(resize_masks(seg[None], TINY))[0])
    for frame, reference in ((ed, pair[0]), (es, pair[1])):
        r = np.corrcoef(frames[frame].ravel().astype(float), reference.ravel())[0, 1]
        assert r > 0.99


def _fake_population(root: Path, n_frames: int = 10, seed: int = 0) -> Path:
    """A frames population in the writer's format with random content (no rendering)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    counts = [4, n_frames - 4]
    frames = rng.integers(0, 256, (n_frames, *TINY), dtype=np.uint8)
    areas = rng.integers(0, 200, (n_frames, 3, TINY[2])).astype(np.int16)
    np.savez_compressed(root / "shard_00000.npz", frames=frames, areas=areas,
                        rows=np.array("[]"))
    pd.DataFrame({"subject_id": ["a", "b"], "centre": "X", "vendor": "Siemens",
                  "n_frames": counts, "shard": 0, "first_row": [0, 4], "ed_frame": 0,
                  "es_frame": 1, "crop_source": "seg_lv"}).to_csv(root / "index.csv",
                                                                  index=False)
    (root / "population.json").write_text(json.dumps(
        {"generator": "v2", "seed": seed, "n_subjects": 2, "n_centre_sets": 1,
         "image_size": list(TINY), "crop_size": CROP, "complete": True,
         "sizes": {"subjects": 2, "frames": n_frames}}))
    return root


def _tensor_bytes(path: Path) -> bytes:
    """The tensor data of a .safetensors file (its JSON header's key order is arbitrary)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return raw[8 + length:]


def _pretrain(population: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--frames-population", str(population), "--size", "test-tiny",
                 "--epochs", "2", "--batch-size", "4", "--warmup-epochs", "0.5",
                 "--device", "cpu", "--no-progress", "--out", str(out), *extra])


def test_chunked_resumed_run_is_byte_identical_to_an_uninterrupted_one(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _fake_population(tmp_path / "pop")
    head = ("--anatomy-weight", "0.5")  # the head's weights and moments resume too
    assert _pretrain(data, tmp_path / "whole.safetensors", *head) == 0
    chunk = [*head, "--checkpoint", str(tmp_path / "ck.pt"), "--checkpoint-every", "2",
             "--stop-after-minutes", "0"]  # 0 minutes: stop after every step
    assert _pretrain(data, tmp_path / "chunked.safetensors", *chunk) == 0
    message = capsys.readouterr().out.strip().splitlines()[-1]
    assert message.startswith("stopped after step 1 of 6") and message.endswith("--resume")
    runs = 1
    while not (tmp_path / "chunked.safetensors").exists():
        assert _pretrain(data, tmp_path / "chunked.safetensors", *chunk, "--resume") == 0
        runs += 1
    assert runs == 6
    whole, chunked = tmp_path / "whole.safetensors", tmp_path / "chunked.safetensors"
    assert _tensor_bytes(whole) == _tensor_bytes(chunked)
    assert ((tmp_path / "whole_loss.csv").read_bytes()
            == (tmp_path / "chunked_loss.csv").read_bytes())
    record = json.loads((tmp_path / "chunked.json").read_text())
    assert record["chunks"] == 6 and record["resumes"] == 5 and record["steps"] == 6
    assert record["config"]["anatomy_weight"] == 0.5 and record["config"]["warmup_epochs"] == 0.5
    assert len(record["anatomy"]["target_mean"]) == 3 * TINY[2]
    assert record["data"]["population"]["generator"] == "v2"
    state = read_state_dict(whole)
    assert not any(k.startswith(("decoder.", "dec_", "pred_head_dict")) for k in state)
    model = load_foundation_model(whole, n_classes=2)  # the head is not in the file
    assert model.config.image_size == TINY


def _old_train_mae(frames: torch.Tensor, cfg: PretrainConfig) -> tuple[dict, list[float]]:
    """The training loop as it was before chunks and the anatomy head (the reference)."""
    model = build_mae(cfg)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(frames) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = min(total, steps_per_epoch * cfg.warmup_epochs)
    losses, step = [], 0
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(frames), generator=gen)
        for start in range(0, len(frames), cfg.batch_size):
            batch = random_shift(frames[order[start:start + cfg.batch_size]], cfg.max_shift, gen)
            removed = slab_token_mask(len(batch), model.config.grid_size, cfg.mask_ratio,
                                      cfg.mask_slab, gen)
            for group in optim.param_groups:
                group["lr"] = lr_at(step, total, warmup, cfg)
            loss, _ = model(batch, removed)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), cfg.clip_grad)
            optim.step()
            losses.append(loss.item())
            step += 1
    return model.state_dict(), losses


def test_anatomy_weight_zero_is_the_old_training_loop() -> None:
    cfg = PretrainConfig(size="test-tiny", epochs=2, batch_size=4, seed=1)
    stored = torch.randint(0, 256, (6, 1, *TINY), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    reference, losses = _old_train_mae(stored.float() / 255, cfg)
    model, log = train_mae(stored.float() / 255, cfg, progress=False)  # a harmonized cohort
    run = run_mae(stored, cfg, progress=False)  # a frames population: uint8, per batch
    for trained, trained_log in ((model, log), (run.model, run.state.log)):
        assert [r["loss"] for r in trained_log] == losses
        assert list(trained_log[0]) == ["step", "epoch", "lr", "loss"]
        for name, value in reference.items():
            assert torch.equal(trained.state_dict()[name], value), name


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_refusals_name_the_offending_option(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    data = _fake_population(tmp_path / "pop", n_frames=4)
    out = tmp_path / "w.safetensors"
    checkpoint = ["--checkpoint", str(tmp_path / "ck.pt")]
    assert _pretrain(data, out, *checkpoint, "--stop-after-minutes", "0") == 0
    capsys.readouterr()
    assert _pretrain(data, out, *checkpoint, "--resume", "--lr", "0.01",
                     "--anatomy-weight", "1") == 2
    err = _error(capsys)
    assert "other settings" in err and "--lr" in err and "--anatomy-weight" in err
    assert _pretrain(data, out, *checkpoint) == 2
    assert "already exists; add --resume" in _error(capsys)
    assert _pretrain(data, out, "--resume") == 2
    assert "--resume needs --checkpoint" in _error(capsys)
    assert _pretrain(data, out, *checkpoint, "--resume", "--stop-after-minutes", "-1") == 2
    assert "--stop-after-minutes must be at least 0" in _error(capsys)
    assert main(["pretrain", "--data", str(tmp_path), "--anatomy-weight", "1",
                 "--out", str(out)]) == 2
    assert "--anatomy-weight needs --frames-population" in _error(capsys)
    assert main(["pretrain", "--frames-population", str(data), "--out", str(out),
                 "--no-progress"]) == 2  # the tutorial preset wants 64 x 64 x 16
    assert "--size needs (64, 64, 16)" in _error(capsys)
    info = json.loads((data / "population.json").read_text())
    (data / "population.json").write_text(json.dumps({**info, "complete": False}))
    assert _pretrain(data, tmp_path / "x.safetensors") == 2
    assert "incomplete" in _error(capsys)
