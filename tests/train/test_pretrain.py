"""End-to-end pretraining on tiny generated data: outputs, freezing, exact resume, bad files, CLI errors."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import make_image_folder, tiny_overrides

from openseer.cli import main as cli_main
from openseer.config import ConfigError, load_config
from openseer.fileio.checkpoint import latest_checkpoint, load_checkpoint
from openseer.swav import SwAVLoss
from openseer.train import pretrain as pretrain_module
from openseer.train.config import PretrainConfig, SwAVConfig
from openseer.train.pretrain import pretrain


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imgs"), per_class=16, formats=("jpg", "png"))


def test_one_step_of_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast lane's guard on the loop: setup, then one step of it on 8 generated images, that moves the
    weights, is logged and checkpointed."""
    source = make_image_folder(tmp_path / "imgs", classes=2, per_class=4, size=16)
    real_step, moved = pretrain_module.train_step, []

    def step(parts, crops, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - pass-through
        before = [p.detach().clone() for p in parts.model.parameters()]
        out = real_step(parts, crops, *args, **kwargs)
        moved.append(
            any(not torch.equal(a, b) for a, b in zip(before, parts.model.parameters(), strict=True))
        )
        return out

    monkeypatch.setattr(pretrain_module, "train_step", step)
    out = tmp_path / "run"
    overrides = tiny_overrides(
        source,
        out,
        crops="[{size: 16, count: 2, scale: [0.3, 1.0]}]",
        data__holdout=0.0,
        optim__batch_size=4,
        optim__warmup_epochs=0,
        run__max_steps=1,
        run__evaluate=False,
    )
    result = pretrain(load_config(PretrainConfig, [], overrides))
    assert moved == [True]
    assert (result.steps, result.images_seen, result.nonfinite_steps) == (1, 4, 0)
    assert math.isfinite(result.final_loss)
    (line, _summary) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert line["step"] == 1 and line["loss"] == result.final_loss and line["lr"] > 0
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["step"] == 1


@pytest.mark.slow
def test_short_run_writes_checkpoint_metrics_and_scores(folder: Path, tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, [], tiny_overrides(folder, tmp_path / "run", run__max_steps=2))
    result = pretrain(cfg)
    assert result.steps == 2 and result.images_seen == 16
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and load_checkpoint(ckpt)["step"] == 2
    assert (tmp_path / "run" / "config.yaml").exists()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "imgs_per_s", "protos_used", "usage_entropy"} <= set(lines[0])
    assert result.evaluation is None  # scoring is the caller's: the loop trains and saves
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2
    assert 0 < summary["first_step_seconds"] <= summary["train_seconds"]  # the first step is timed on its own
    assert summary["precision"] in ("fp32", "bf16") and isinstance(
        summary["compile"], bool
    )  # as the run used them


def test_the_wait_for_data_is_measured(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch stream that sleeps before each batch: the time waited shows in every logged window's
    data_wait_share, in the summary and in the checkpoint (so that a resumed run keeps counting)."""
    real, pause = pretrain_module._batch_positions, 0.3

    def slow(run, step):  # noqa: ANN001, ANN202 - the loop's own arguments
        for crops in real(run, step):
            time.sleep(pause)
            yield crops

    monkeypatch.setattr(pretrain_module, "_batch_positions", slow)
    out = tmp_path / "run"
    cfg = load_config(PretrainConfig, [], tiny_overrides(folder, out, run__max_steps=3, run__log_every=1))
    result = pretrain(cfg)
    assert result.steps == 3
    waited = result.data_wait_share * result.train_seconds
    assert 3 * pause <= waited <= result.train_seconds
    for line in [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][:3]:
        window = cfg.optim.batch_size / line["imgs_per_s"]  # the window of one logged step
        assert pause / window - 0.01 <= line["data_wait_share"] <= 1.0
    assert json.loads((out / "summary.json").read_text())["data_wait_share"] == result.data_wait_share
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["data_seconds"] >= 3 * pause


@pytest.mark.slow
def test_prototypes_frozen_then_trained(folder: Path, tmp_path: Path) -> None:
    def prototypes_after(steps: int, freeze: int) -> torch.Tensor:
        out = tmp_path / f"run{steps}-{freeze}"
        cfg = load_config(
            PretrainConfig,
            [],
            tiny_overrides(
                folder, out, run__max_steps=steps, swav__freeze_prototypes_iters=freeze, run__evaluate=False
            ),
        )
        pretrain(cfg)
        return load_checkpoint(latest_checkpoint(out / "checkpoints"))["model"]["head.prototypes.weight"]

    initial = prototypes_after(0, 0)
    frozen = prototypes_after(2, 10)
    trained = prototypes_after(2, 0)
    torch.testing.assert_close(frozen, initial)
    assert not torch.allclose(trained, initial)
    torch.testing.assert_close(trained.norm(dim=1), torch.ones(trained.shape[0]), atol=1e-2, rtol=0)


@pytest.mark.slow
def test_the_loop_sizes_its_queue_as_main_swav(folder: Path, tmp_path: Path) -> None:
    """A 20-entry queue at a global batch of 8 holds 16 rows: two whole batches (main_swav rounds down)."""
    out = tmp_path / "run"
    overrides = tiny_overrides(folder, out, run__max_steps=1, swav__queue_length=20, run__evaluate=False)
    pretrain(load_config(PretrainConfig, [], overrides))
    queue = load_checkpoint(latest_checkpoint(out / "checkpoints"))["queue"]["embeddings"]
    assert queue.shape[2] == SwAVConfig(queue_length=20).local_queue_length(8, 1) == 16


@pytest.mark.slow
def test_the_temperature_follows_its_cosine_to_the_configured_one(folder: Path, tmp_path: Path) -> None:
    """swav.temperature_start: the swapped prediction's temperature starts there and follows a cosine towards
    swav.temperature over the run's own steps (two epochs here), as logged at each step."""
    out = tmp_path / "run"
    overrides = tiny_overrides(
        folder,
        out,
        optim__epochs=2,
        run__log_every=1,
        run__evaluate=False,
        swav__temperature=0.1,
        swav__temperature_start=0.3,
    )
    pretrain(load_config(PretrainConfig, [], overrides))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r["temperature"] for r in lines if "temperature" in r]
    n = len(logged)
    assert n >= 4 and n == sum("loss" in r for r in lines)  # every step logs its temperature
    assert logged == pytest.approx([0.1 + 0.1 * (1 + math.cos(math.pi * t / n)) for t in range(n)])
    assert logged[0] == pytest.approx(0.3) and logged[-1] < 0.11


def test_a_temperature_start_at_or_below_zero_names_its_key() -> None:
    with pytest.raises(ConfigError, match="swav.temperature_start"):
        load_config(PretrainConfig, [], ["swav.temperature_start=0"])


@pytest.mark.parametrize("cache_size", [16, None])
@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_weights(
    folder: Path, tmp_path: Path, cache_size: int | None
) -> None:
    """Steps 0..5 in one go == steps 0..2, stop, resume, steps 3..5 (data order, crops, queue, schedule)."""
    common = dict(
        data__cache_size="null" if cache_size is None else cache_size,
        swav__queue_length=16,
        swav__queue_start_epoch=0.0,
        run__checkpoint_every=3,
        run__evaluate=False,
    )
    straight = tmp_path / "straight"
    pretrain(load_config(PretrainConfig, [], tiny_overrides(folder, straight, **common)))
    split = tmp_path / "split"
    pretrain(load_config(PretrainConfig, [], tiny_overrides(folder, split, run__max_steps=3, **common)))
    assert load_checkpoint(latest_checkpoint(split / "checkpoints"))["step"] == 3
    pretrain(load_config(PretrainConfig, [], tiny_overrides(folder, split, **common)), resume=True)

    a = load_checkpoint(latest_checkpoint(straight / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(split / "checkpoints"))
    assert a["step"] == b["step"] == a["total_steps"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["queue"]["embeddings"], b["queue"]["embeddings"])


@pytest.mark.slow
def test_streaming_path_skips_and_counts_bad_files(folder: Path, tmp_path: Path) -> None:
    dirty = tmp_path / "dirty"
    make_image_folder(dirty, per_class=16, formats=("jpg", "png"))
    (dirty / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (dirty / "class1" / "empty.png").write_bytes(b"")
    cfg = load_config(
        PretrainConfig,
        [],
        tiny_overrides(
            dirty, tmp_path / "run", data__cache_size="null", data__holdout=0.0, run__evaluate=False
        ),
    )
    result = pretrain(cfg)
    assert result.steps == 50 // 8  # 48 good + 2 bad files, batch 8
    # every batch slot held either a used image or a counted bad one; this epoch's order draws >= 1 bad file
    assert result.images_seen + result.skipped_images == result.steps * 8
    assert result.skipped_images >= 1


def test_cli_rejects_unknown_key_with_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["pretrain", "optim.base_lrr=0.1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "optim.base_lrr" in err and "optim.base_lr" in err


def test_cli_missing_data_path_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["pretrain", f"data.source={tmp_path / 'nope'}", f"run.out_dir={tmp_path / 'run'}"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_print_config_resolves_preset_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["pretrain", "--config", "seer-rg256gf", "--print-config", "optim.batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "regnety_256gf" in out and "batch_size: 4" in out and "prototypes: 16000" in out


@pytest.mark.slow
def test_a_batch_of_only_unreadable_files_is_a_skipped_step(tmp_path: Path) -> None:
    """2 good and 6 empty files, batch 2: at least two batches hold no readable image; the epoch still has its 4
    steps (the empty ones skipped), so step numbers stay those of the batches and resuming stays exact."""
    source = tmp_path / "mostly_bad"
    source.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 20), (60 * i, 90, 120)).save(source / f"good{i}.png")
    for i in range(6):
        (source / f"empty{i}.jpg").write_bytes(b"")
    cfg = load_config(
        PretrainConfig,
        [],
        tiny_overrides(
            source, tmp_path / "run", data__cache_size="null", optim__batch_size=2, run__evaluate=False
        ),
    )
    result = pretrain(cfg)
    assert result.steps == 4 and result.images_seen == 2 and result.skipped_images == 6
    listed = json.loads((tmp_path / "run" / "skipped_images.json").read_text())
    assert sorted(row["path"] for row in listed) == sorted(str(p) for p in source.glob("empty*.jpg"))
    assert {row["reason"] for row in listed} == {"empty file"}


def _nan_loss_from(monkeypatch: pytest.MonkeyPatch, first: int, last: float = float("inf")) -> None:
    """Make the SwAV loss of the loop's calls number first..last (1-based) NaN, as a diverging run would.

    The machine is told it has no native bf16, so ``run.precision=auto`` decides without trial steps (which call
    the loss too) on every CPU, and the count starts at the loop's first step."""
    import openseer.train.autotune as autotune

    monkeypatch.setattr(autotune, "device_native_bf16", lambda device: False)

    original, calls = SwAVLoss.__call__, [0]

    def nan_from(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - pass-through
        calls[0] += 1
        loss, codes = original(self, *args, **kwargs)
        return (loss * float("nan") if first <= calls[0] <= last else loss), codes

    monkeypatch.setattr(SwAVLoss, "__call__", nan_from)


@pytest.mark.slow
def test_a_non_finite_step_is_skipped_and_counted(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_loss_from(monkeypatch, first=2, last=2)
    run = tmp_path / "run"
    overrides = tiny_overrides(
        folder,
        run,
        run__max_steps=2,
        run__checkpoint_every=1,
        run__keep_checkpoints=0,
        run__evaluate=False,
        swav__freeze_prototypes_iters=100,
    )
    result = pretrain(load_config(PretrainConfig, [], overrides))
    assert result.steps == 2 and result.nonfinite_steps == 1 and result.images_seen == 8
    assert json.loads((run / "summary.json").read_text())["nonfinite_steps"] == 1
    # the state after step 2 (written at the end of the run) is the state after step 1: nothing was applied
    before, after = (load_checkpoint(run / "checkpoints" / f"ckpt-0000000{i}.pt") for i in (1, 2))
    assert (after["step"], after["nonfinite"], after["images_seen"]) == (2, 1, 8)
    for key, value in before["model"].items():
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BatchNorm statistics follow every forward pass, applied step or not
        if key == "head.prototypes.weight":  # renormalised at the start of each step
            torch.testing.assert_close(after["model"][key], value, rtol=0, atol=1e-6)
        else:
            assert torch.equal(after["model"][key], value), key
    for i, state in before["optimizer"]["state"].items():
        for name, buffer in state.items():
            assert torch.equal(after["optimizer"]["state"][i][name], buffer), (i, name)


@pytest.mark.slow
def test_cli_stops_a_non_finite_streak_with_advice(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _nan_loss_from(monkeypatch, first=3)
    run = tmp_path / "run"
    overrides = tiny_overrides(
        folder,
        run,
        optim__epochs=5,
        run__checkpoint_every=1,
        run__max_nonfinite_steps=3,
        run__evaluate=False,
    )
    assert cli_main(["pretrain", *overrides]) == 2
    err = capsys.readouterr().err
    assert "step 2: non-finite loss or gradient, step skipped (1 so far)" in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("openseer: error: training diverged: 3 steps in a row up to step 4")
    for cause in (
        "learning rate",
        "optim.base_lr",
        "Sinkhorn epsilon",
        "swav.epsilon",
        "fp16",
        "run.precision",
    ):
        assert cause in message
    assert f"the last good checkpoint is {run / 'checkpoints' / 'ckpt-00000002.pt'}" in message
    assert "--resume" in message


@pytest.mark.slow
def test_progressive_resolution_grows_the_crops_over_the_run(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = tiny_overrides(
        folder,
        out,
        run__max_steps=4,
        run__evaluate=False,
        progressive__start_scale=0.5,
        progressive__until=1.0,
        progressive__multiple=4,
    )
    assert pretrain(load_config(PretrainConfig, [], overrides)).steps == 4
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    sides = [line["crop_side"] for line in lines if "crop_side" in line]
    # the 16-px crops start at half their side and grow (a 1-epoch run of at least 4 steps is past half of it)
    assert len(sides) == 4 and sides[0] == 8 and sides == sorted(sides) and 12 <= sides[-1] <= 16
    assert all(math.isfinite(line["loss"]) for line in lines if "loss" in line)


@pytest.mark.parametrize(
    "bad", ["progressive.start_scale=0", "progressive.until=1.5", "progressive.multiple=0"]
)
def test_progressive_settings_name_the_bad_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
        load_config(PretrainConfig, [], [bad])
