"""Continued pretraining (model.init): what is read and checked, what is loaded into the run's model and what is
made new, the resume rule, and a whole run from a VISSL-layout file whose initial-weights kNN is the knn
command's on the same split."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from support import make_image_folder, tiny_overrides, vissl_file

from openseer.cli import main as cli_main
from openseer.config import ConfigError, load_config
from openseer.eval.knn import KnnConfig, run_knn
from openseer.fileio.checkpoint import latest_checkpoint, load_checkpoint
from openseer.models.build import random_model
from openseer.train.config import PretrainConfig
from openseer.train.initial import load_initial_, read_initial
from openseer.train.pretrain import pretrain
from openseer.weights import load_weights


def _config(tmp_path: Path, *overrides: str) -> PretrainConfig:
    return load_config(
        PretrainConfig, ["cpu"], tiny_overrides(tmp_path / "imgs", tmp_path / "run") + list(overrides)
    )


def _tiny_head(cfg: PretrainConfig, seed: int = 3) -> dict[str, torch.Tensor]:
    """A SwAV head of ``cfg``'s shape drawn with ``seed`` (openseer's keys)."""
    return {k: v.clone() for k, v in random_model(cfg.model, seed).head.state_dict().items()}


def test_trunk_loaded_and_matching_head_loaded(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    head = _tiny_head(cfg)
    file = vissl_file(tmp_path / "seer.torch", head=head)
    cfg, initial = read_initial(load_config(cfg, [], [f"model.init={file}"]))
    assert cfg.model.init == str(file.resolve())
    model = random_model(cfg.model, seed=0)
    said = load_initial_(model, initial)
    expected = load_weights(file)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, expected.backbone[key]), key
    for key, value in model.head.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, head[key]), key
    assert "trunk loaded" in said and "SwAV head loaded" in said and "regnety_200mf" in said


def test_head_of_another_shape_is_made_new(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    other = _config(tmp_path, "model.prototypes=7")
    file = vissl_file(tmp_path / "seer.torch", head=_tiny_head(other))
    cfg, initial = read_initial(load_config(cfg, [], [f"model.init={file}"]))
    model = random_model(cfg.model, seed=0)
    drawn = model.head.prototypes.weight.detach().clone()
    said = load_initial_(model, initial)
    assert torch.equal(model.head.prototypes.weight, drawn)  # the new head keeps its random draw
    assert "SwAV head new" in said and "prototypes 7 in the file vs 10" in said
    assert "freeze_prototypes_iters" in said


def test_classifier_is_ignored(tmp_path: Path) -> None:
    classifier = {"weight": torch.randn(3, 368), "bias": torch.zeros(3)}
    file = vissl_file(tmp_path / "finetuned.torch", classifier=classifier)
    cfg, initial = read_initial(_config(tmp_path, f"model.init={file}"))
    said = load_initial_(random_model(cfg.model, seed=0), initial)
    assert "trunk loaded" in said and "classifier ignored" in said and "the file holds no SwAV head" in said


def test_arch_auto_takes_the_files_arch_and_stem(tmp_path: Path) -> None:
    file = vissl_file(tmp_path / "rn18.torch", arch="resnet18")
    cfg = _config(tmp_path, f"model.init={file}", "model.arch=auto", "model.output_stride=null")
    resolved, _ = read_initial(cfg)
    assert (resolved.model.arch, resolved.model.stem) == ("resnet18", "imagenet")


def test_arch_auto_needs_init() -> None:
    with pytest.raises(ConfigError, match="model.init is not set"):
        load_config(PretrainConfig, ["cpu"], ["model.arch=auto"])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: vissl_file(d / "rn18.torch", arch="resnet18"), "holds a resnet18 trunk, but model.arch is "
         "regnety_200mf"),
        (lambda d: d / "missing.torch", "model.init': no such file"),
        (lambda d: vissl_file(d / "clf.torch", classifier={"weight": torch.zeros(2, 4)}, trunk=False),
         "no trunk tensors"),
    ],
    ids=["other-arch", "missing", "classifier-only"],
)  # fmt: skip
def test_bad_init_files_are_clear_errors(tmp_path: Path, make, match: str) -> None:  # noqa: ANN001
    file = make(tmp_path)
    with pytest.raises(ConfigError, match=match) as err:
        read_initial(_config(tmp_path, f"model.init={file}"))
    assert "model.init" in str(err.value)


def test_cli_names_a_bad_init_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_image_folder(tmp_path / "imgs", classes=2, per_class=4, size=16)
    file = vissl_file(tmp_path / "rn18.torch", arch="resnet18")
    code = cli_main(["pretrain", "--config", "cpu", *_overrides(tmp_path), f"model.init={file}"])
    err = capsys.readouterr().err
    assert code != 0 and "resnet18" in err and "regnety_200mf" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def _overrides(tmp_path: Path, **changes: object) -> list[str]:
    fixed = {
        "data__cache_size": None,
        "run__precision": "fp32",
        "run__compile": False,
        "run__evaluate": False,
    }
    return tiny_overrides(tmp_path / "imgs", tmp_path / "run", **{**fixed, **changes})


@pytest.mark.slow
def test_cli_run_from_a_vissl_file_scores_it_as_knn_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """openseer pretrain --config cpu model.init=FILE: the log says what was loaded, the run's config records
    the file, and the initial-weights kNN is openseer knn FILE's over the run's held-out split."""
    folder = make_image_folder(tmp_path / "imgs")
    file = vissl_file(tmp_path / "seer.torch")
    args = _overrides(tmp_path, run__max_steps=5, run__evaluate=True, run__checkpoint_every=5)
    with caplog.at_level(logging.INFO, logger="openseer"):
        assert cli_main(["pretrain", "--config", "cpu", *args, f"model.init={file}"]) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model.init:")]
    assert said == [
        f"model.init: {file.resolve()} (regnety_200mf): trunk loaded; SwAV head new (the file holds no SwAV "
        "head; prototypes frozen for swav.freeze_prototypes_iters steps)"
    ]
    printed = capsys.readouterr().out
    assert "kNN, initial weights" in printed and "random initialisation" not in printed
    run = tmp_path / "run"
    cfg = load_config(PretrainConfig, [run / "config.yaml"])
    assert cfg.model.init == str(file.resolve())
    # the description stored with the run's weights knows nothing of model.init
    assert "init" not in load_weights(run).model.__dict__

    initial = __import__("json").loads((run / "eval" / "pretraining-knn-initial.json").read_text())
    assert initial["model"] == "initial"
    knn = run_knn(
        KnnConfig(
            checkpoint=str(file),
            train=str(folder),
            holdout=cfg.data.holdout,
            split_seed=cfg.run.seed,
            k=cfg.run.knn_k,
            temperature=cfg.run.knn_temperature,
            results=str(tmp_path / "knn"),
            features=load_config(KnnConfig, [], ["checkpoint=x", "features.workers=0"]).features,
        )
    )
    assert knn["n_test"] == initial["n_test"]
    assert initial["top1"] == pytest.approx(knn["top1"], abs=1e-6)
    assert initial["top5"] == pytest.approx(knn["top5"], abs=1e-6)


def test_resume_wins_over_init(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--resume with a checkpoint: the run goes on from it and says the file is not loaded; without one, the
    run starts from the file."""
    make_image_folder(tmp_path / "imgs", classes=2, per_class=8, size=16)
    file = vissl_file(tmp_path / "seer.torch")
    cfg = load_config(
        PretrainConfig,
        ["cpu"],
        [*_overrides(tmp_path, run__max_steps=1, optim__epochs=3), f"model.init={file}"],
    )
    with caplog.at_level(logging.INFO, logger="openseer"):
        pretrain(cfg, resume=True)  # nothing to resume yet: starts from the file
    assert any(r.getMessage().startswith("model.init:") for r in caplog.records)
    assert any("no checkpoint" in r.getMessage() for r in caplog.records)
    saved = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    caplog.clear()
    cfg = load_config(cfg, [], ["run.max_steps=2"])
    with caplog.at_level(logging.INFO, logger="openseer"):
        result = pretrain(cfg, resume=True)
    messages = [r.getMessage() for r in caplog.records]
    assert any("--resume wins over model.init" in m for m in messages)
    assert not any(m.startswith("model.init:") for m in messages)
    assert result.steps == 2 and saved["step"] == 1
