"""``openseer export`` of the CPU preset's backbone: ONNX (run with onnxruntime), TorchScript, safetensors."""

from __future__ import annotations

import typing
import warnings
from pathlib import Path
from typing import get_args

import pytest
import torch
from support import randomize_batchnorm
from torch import nn

from openseer.cli import main as cli_main
from openseer.config import ConfigError, load_config, to_dict
from openseer.fileio.checkpoint import save_checkpoint
from openseer.interop.config import EXPORT_SUFFIXES, ExportConfig
from openseer.interop.export import FORMATS, export, relative_error
from openseer.models import build_backbone, build_model
from openseer.train.config import PretrainConfig
from openseer.train.sharded_checkpoint import save_sharded
from openseer.weights import Weights, load_weights
from openseer.weights.core import imported_model
from openseer.weights.description import IMPORTED_PREPROCESS

# ONNX export and its check are the optional `export` extra (installed with `test`); only the tests of that format
# skip without it, and say which package is missing
EXPORT_EXTRA = "is not installed (pip install 'openseer[export]')"


def _onnx_packages() -> None:
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package, reason=f"{package} {EXPORT_EXTRA}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run folder holding a checkpoint of the CPU preset's model, and a fine-tuned checkpoint beside it."""
    cfg = load_config(PretrainConfig, ["cpu"])
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(cfg.model), seed=1)
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(
        {"config": to_dict(cfg), "model": model.state_dict(), "step": 1}, folder / "checkpoints", 1
    )
    classifier = nn.Linear(model.backbone.num_features, 3)
    finetuned = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    finetuned |= {f"classifier.{k}": v for k, v in classifier.state_dict().items()}
    torch.save(
        {"config": to_dict(cfg), "model": finetuned, "classes": ["a", "b", "c"]}, folder / "finetuned.pt"
    )
    size = cfg.crops[0].size
    x = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(2))
    return {"folder": folder, "backbone": model.backbone, "classifier": classifier, "x": x, "cfg": cfg}


def _onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": x.numpy()})
    return torch.from_numpy(out)


@pytest.mark.slow
def test_onnx_backbone_matches_pytorch(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _onnx_packages()
    dst = tmp_path / "backbone.onnx"
    assert cli_main(["export", str(run["folder"]), str(dst), "verify=true"]) == 0
    assert "relative error" in capsys.readouterr().out
    assert run["cfg"].model.arch == "regnety_200mf"
    with torch.no_grad():
        expected = run["backbone"](run["x"])
    for batch in (5, 1):  # the batch axis is dynamic
        actual = _onnx(dst, run["x"][:batch])
        assert actual.shape == (batch, run["backbone"].num_features)
        assert relative_error(actual, expected[:batch]) <= 1e-4


@pytest.mark.slow
def test_onnx_with_classifier_outputs_logits(run: dict, tmp_path: Path) -> None:
    _onnx_packages()
    dst = tmp_path / "classifier.onnx"
    assert (
        cli_main(["export", str(run["folder"] / "finetuned.pt"), str(dst), "with_head=true"])
        == 0
    )
    with torch.no_grad():
        expected = run["classifier"](run["backbone"](run["x"]))
    assert relative_error(_onnx(dst, run["x"]), expected) <= 1e-4


@pytest.mark.slow
def test_torchscript_accepts_other_batches_and_sizes(run: dict, tmp_path: Path) -> None:
    dst = tmp_path / "backbone.pt"
    assert cli_main(["export", str(run["folder"]), str(dst), "format=torchscript"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(dst))
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), run["backbone"](x))


def test_safetensors_keeps_the_backbone_and_the_classifier_only_when_asked(run: dict, tmp_path: Path) -> None:
    assert (
        cli_main(["export", str(run["folder"]), str(tmp_path / "b.safetensors")])
        == 0
    )
    weights = load_weights(tmp_path / "b.safetensors")
    assert weights.head is None and weights.classifier is None and (tmp_path / "b.yaml").exists()
    original = run["backbone"].state_dict()
    assert all(torch.equal(weights.backbone[k], v) for k, v in original.items())

    src = str(run["folder"] / "finetuned.pt")
    assert (
        cli_main(["export", src, str(tmp_path / "c.safetensors"), "with_head=true"])
        == 0
    )
    weights = load_weights(tmp_path / "c.safetensors")
    assert weights.classes == ["a", "b", "c"] and torch.equal(
        weights.classifier["bias"], run["classifier"].bias
    )


def test_with_head_needs_a_classifier(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli_main(
        ["export", str(run["folder"]), str(tmp_path / "x.onnx"), "with_head=true"]
    )
    assert code == 2
    assert "holds no classifier" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_formats_match_the_exporter() -> None:
    (literal, _none) = get_args(typing.get_type_hints(ExportConfig)["format"])
    assert set(get_args(literal)) == set(EXPORT_SUFFIXES.values()) == set(FORMATS)


def test_format_from_the_destination_suffix() -> None:
    for dst, fmt in (("b.onnx", "onnx"), ("b.pt", "torchscript"), ("b.safetensors", "safetensors")):
        cfg = ExportConfig(checkpoint="run", dst=dst)
        cfg.validate()
        assert cfg.format == fmt
    kept = ExportConfig(checkpoint="run", dst="b.onnx", format="torchscript")
    kept.validate()
    assert kept.format == "torchscript"  # a format given wins over the suffix
    with pytest.raises(ConfigError, match="cannot tell the format"):
        ExportConfig(checkpoint="run", dst="b.bin").validate()


def _read_safetensors(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return len(list(f.keys()))


def _read_torchscript(path: Path) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return len(torch.jit.load(str(path)).state_dict())


def _read_onnx(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path)).graph.initializer)


def _read_torchvision(path: Path) -> int:
    import torchvision

    missing, unexpected = torchvision.models.regnet_y_400mf().load_state_dict(torch.load(path), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    return len(torch.load(path))


# each format's own reader, independent of openseer: what a user of the file would load it with
READERS = {
    "safetensors": _read_safetensors,
    "torchscript": _read_torchscript,
    "onnx": _read_onnx,
    "torchvision": _read_torchvision,
}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_the_command_offers_writes_a_file_its_own_reader_loads(
    run: dict, tmp_path: Path, fmt: str
) -> None:
    assert set(FORMATS) == set(READERS), "a format without a reader here: add one"
    if fmt == "onnx":
        _onnx_packages()
    weights = load_weights(run["folder"])
    if fmt == "torchvision":  # torchvision has no RegNetY-200MF (the preset's trunk): its smallest, 400MF
        weights = Weights(
            imported_model("regnety_400mf", "imagenet", None),
            IMPORTED_PREPROCESS,
            build_backbone("regnety_400mf").state_dict(),
        )
    (path, *_) = export(weights, tmp_path / f"backbone.{fmt}", fmt)
    assert READERS[fmt](path) > 0
    with pytest.raises(ConfigError, match="expected one of safetensors, torchscript, onnx"):
        export(load_weights(run["folder"]), tmp_path / "x.bin", "pickle")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # one process on purpose
def test_sharded_fsdp_run_exports_like_any_other(run: dict, tmp_path: Path) -> None:
    """An FSDP run's ``dcp-*`` checkpoint (written here by one process) is gathered for export and loading."""
    from openseer.swav import EmbeddingQueue

    cfg = run["cfg"]
    model = randomize_batchnorm(build_model(cfg.model), seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    queue = EmbeddingQueue(len(cfg.swav.crops_for_assign), 0, cfg.model.out_dim, torch.device("cpu"))
    save_sharded(tmp_path / "fsdp" / "checkpoints", 5, model, optimizer, queue, {"config": to_dict(cfg)})
    dst = tmp_path / "fsdp.safetensors"
    assert cli_main(["export", str(tmp_path / "fsdp"), str(dst)]) == 0
    weights = load_weights(dst)
    assert all(torch.equal(weights.backbone[k], v) for k, v in model.backbone.state_dict().items())
