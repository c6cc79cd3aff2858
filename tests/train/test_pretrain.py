"""End-to-end pretraining on tiny generated data: outputs, freezing, exact resume, bad files, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from openseer.cli import main as cli_main
from openseer.config import load_config
from openseer.train.checkpoint import latest_checkpoint, load_checkpoint
from openseer.train.config import PretrainConfig
from openseer.train.pretrain import pretrain


def make_folder(root: Path, classes: int = 3, per_class: int = 16, size: int = 20) -> Path:
    """Class-coloured noisy squares as JPEG/PNG files in an ImageFolder tree."""
    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        base = torch.zeros(3, size, size)
        base[c % 3] = 0.8
        for i in range(per_class):
            img = (base + 0.3 * torch.rand(3, size, size, generator=gen)).clamp(0, 1)
            arr = (img.permute(1, 2, 0).numpy() * 255).astype("uint8")
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(arr).save(root / f"class{c}" / f"{i}.{ext}")
    return root


def tiny_overrides(source: Path, out: Path, **extra: object) -> list[str]:
    values = {
        "data.source": str(source),
        "data.cache_size": 16,
        "data.holdout": 0.25,
        "data.workers": 0,
        "crops": "[{size: 16, count: 2, scale: [0.3, 1.0]}, {size: 8, count: 2, scale: [0.1, 0.3]}]",
        "model.arch": "regnety_200mf",
        "model.stem": "small",
        "model.head_hidden": "[32]",
        "model.out_dim": 16,
        "model.prototypes": 10,
        "optim.batch_size": 8,
        "optim.epochs": 1,
        "optim.warmup_epochs": 0.5,
        "swav.freeze_prototypes_iters": 0,
        "swav.queue_length": 0,
        "run.out_dir": str(out),
        "run.progress": False,
        "run.tensorboard": False,
        "run.log_every": 1,
        "run.knn_k": 5,
    }
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEER_CACHE", str(tmp_path / "cache"))


def test_short_run_writes_checkpoint_metrics_and_scores(folder: Path, tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, [], tiny_overrides(folder, tmp_path / "run", run__max_steps=2))
    result = pretrain(cfg)
    assert result.steps == 2 and result.images_seen == 16
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and load_checkpoint(ckpt)["step"] == 2
    assert (tmp_path / "run" / "config.yaml").exists()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "imgs_per_s", "protos_used", "usage_entropy"} <= set(lines[0])
    assert 0.0 <= result.knn_top1 <= 1.0 and 0.0 <= result.knn_top1_random <= 1.0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2


def test_prototypes_frozen_then_trained(folder: Path, tmp_path: Path) -> None:
    def prototypes_after(steps: int, freeze: int) -> torch.Tensor:
        out = tmp_path / f"run{steps}-{freeze}"
        cfg = load_config(
            PretrainConfig,
            [],
            tiny_overrides(
                folder, out, run__max_steps=steps, swav__freeze_prototypes_iters=freeze, run__knn_at_end=False
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


@pytest.mark.parametrize("cache_size", [16, None])
def test_interrupted_run_resumes_to_identical_weights(
    folder: Path, tmp_path: Path, cache_size: int | None
) -> None:
    """Steps 0..5 in one go == steps 0..2, stop, resume, steps 3..5 (data order, crops, queue, schedule)."""
    common = dict(
        data__cache_size="null" if cache_size is None else cache_size,
        swav__queue_length=16,
        swav__queue_start_epoch=0.0,
        run__checkpoint_every=3,
        run__knn_at_end=False,
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


def test_streaming_path_skips_and_counts_bad_files(folder: Path, tmp_path: Path) -> None:
    dirty = tmp_path / "dirty"
    make_folder(dirty)
    (dirty / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (dirty / "class1" / "empty.png").write_bytes(b"")
    cfg = load_config(
        PretrainConfig,
        [],
        tiny_overrides(
            dirty, tmp_path / "run", data__cache_size="null", data__holdout=0.0, run__knn_at_end=False
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
