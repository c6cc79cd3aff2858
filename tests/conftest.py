"""Fixtures shared by the whole suite: an isolated cache folder for every test, a tiny labelled image folder and
a 2-step pretraining run on it (made once per test process), and every kind of weights file a command takes,
built from that run (tests/test_weights_matrix.py runs every command on each).

Tests that need the pretraining (``tiny_run`` and everything built from it) are slow by definition: the
collection hook below refuses one that is not marked ``@pytest.mark.slow``, so that ``pytest -m "not slow"``
never pays for a pretraining.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported where used: the xdist controller loads this file too, and never needs torch
    import torch
    from support import WeightSource

# fixtures that run a pretraining: tiny_run, and weight_source, which asks for one of the source_* fixtures (all
# built from tiny_run) by name at run time; pytest's closure of a test's fixtures includes those they ask for
PRETRAINING_FIXTURES = frozenset({"tiny_run", "weight_source"})


def pytest_configure(config: pytest.Config) -> None:
    # tests/support (pyproject's pythonpath) for the processes the tests start too: several run a test file as
    # a script, one per rank of a local multi-process run
    tests_dir = str(Path(__file__).resolve().parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if tests_dir not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([tests_dir, *paths])
    # an xdist worker (`pytest -n N` on N cores) computes with one thread: N workers of the default one thread
    # per core each would oversubscribe the cores, and oneDNN's spinning threads then slow every test down
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if PRETRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the pretraining fixtures but are not marked @pytest.mark.slow: "
            + ", ".join(unmarked)
        )


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own OPENSEER_CACHE (decoded images, features): no test sees another's cache."""
    monkeypatch.setenv("OPENSEER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def fresh_compile_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts as a fresh process would: no step compiled in it before (openseer.train.compile_cache)."""
    from openseer.train import compile_cache

    monkeypatch.setattr(compile_cache, "_compiled_in_process", set())


DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def docs_generator(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Loads a page generator of docs/ (``gen_*.py``) by name as a module, with its folder on ``sys.path`` for
    the sibling module it imports."""
    monkeypatch.syspath_prepend(str(DOCS))

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def _pretrain(folder: Path, out: Path, **changes: object) -> Path:
    from support import tiny_overrides

    from openseer.config import load_config
    from openseer.train.config import PretrainConfig
    from openseer.train.pretrain import pretrain

    pretrain(load_config(PretrainConfig, [], tiny_overrides(folder, out, **changes)))
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, image folder) of a 2-step pretraining on 36 images of 3 classes; shared, do not modify."""
    from support import cache_env, make_image_folder

    root = tmp_path_factory.mktemp("tiny")
    folder = make_image_folder(root / "imgs")
    with cache_env(root / "cache"):  # session fixtures outlive the autouse cache_dir of the test asking
        _pretrain(folder, root / "run", run__max_steps=2, run__evaluate=False)
    return root / "run", folder


@pytest.fixture
def fresh_run(tiny_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the tiny run, for tests that write results into it."""
    run, folder = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, folder


# ============ every kind of weights file, built once per test process from the tiny run ============

CLASS_NAMES = ["class0", "class1", "class2"]  # the classes of make_image_folder's tree


def _backbone_of(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("backbone."): v for k, v in model_state.items() if k.startswith("backbone.")}


def _head_of(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("head."): v for k, v in model_state.items() if k.startswith("head.")}


@pytest.fixture(scope="session")
def tiny_state(tiny_run: tuple[Path, Path]) -> dict[str, torch.Tensor]:
    """The tiny run's model tensors, read with plain torch.load (not openseer's loader): the reference every
    file built from the run must give back."""
    import torch

    from openseer.fileio.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(tiny_run[0] / "checkpoints")
    assert ckpt is not None
    return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="session")
def tiny_linear(tiny_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a linear probe on the tiny run (``RUN/linear``: checkpoints/ckpt-*.pt)."""
    from support import cache_env

    from openseer.eval.embed import FeatureConfig
    from openseer.eval.linear import LinearConfig, ProbeConfig, run_linear

    run, folder = tiny_run
    root = tmp_path_factory.mktemp("linear")
    cfg = LinearConfig(
        checkpoint=str(run),
        train=str(folder),
        probe=ProbeConfig(lrs=[0.1], epochs=2),
        features=FeatureConfig(workers=0, progress=False),
        out_dir=str(root / "linear"),
        results=str(root / "eval"),
    )
    with cache_env(root / "cache"):
        run_linear(cfg)
    return root / "linear"


@pytest.fixture(scope="session")
def tiny_finetune(tiny_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ckpt-*.pt written by a 1-epoch fine-tuning of the tiny run."""
    from support import cache_env

    from openseer.eval.finetune import FinetuneConfig, run_finetune
    from openseer.eval.recipe import RecipeConfig

    run, folder = tiny_run
    root = tmp_path_factory.mktemp("finetune")
    cfg = FinetuneConfig(
        checkpoint=str(run),
        train=str(folder),
        recipe=RecipeConfig(epochs=1, batch_size=9),
        out_dir=str(root / "finetune"),
        results=str(root / "eval"),
        device="cpu",
        workers=0,
        progress=False,
    )
    with cache_env(root / "cache"):
        return Path(run_finetune(cfg)["classifier"])


@pytest.fixture(scope="session")
def tiny_classifier_weights(tiny_linear: Path):  # noqa: ANN201 - openseer.weights.Weights
    """The linear probe's backbone and classifier (BatchNorm folded), to write into foreign layouts."""
    from openseer.weights import load_weights

    return load_weights(tiny_linear)


@pytest.fixture(scope="session")
def source_run(tiny_run: tuple[Path, Path], tiny_state: dict, tiny_linear: Path) -> WeightSource:
    from support import WeightSource

    return WeightSource("run", tiny_run[0], _backbone_of(tiny_state), True, tiny_linear, CLASS_NAMES)


@pytest.fixture(scope="session")
def source_ckpt(tiny_run: tuple[Path, Path], tiny_state: dict, tiny_finetune: Path) -> WeightSource:
    from support import WeightSource

    from openseer.fileio.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(tiny_run[0] / "checkpoints")
    return WeightSource("ckpt", ckpt, _backbone_of(tiny_state), True, tiny_finetune, CLASS_NAMES)


@pytest.fixture(scope="session")
def source_fsdp(tiny_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> WeightSource:
    """A 2-step pretraining with parallel.strategy=fsdp in one process, which writes its checkpoints sharded
    (``checkpoints/dcp-*``) as an FSDP job of any size does; the reference tensors come from torch's own
    DCP -> torch.save converter."""
    import torch
    from support import WeightSource, cache_env
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from openseer.train.sharded_checkpoint import latest_sharded

    root = tmp_path_factory.mktemp("fsdp")
    with cache_env(root / "cache"):
        run = _pretrain(
            tiny_run[1], root / "run", run__max_steps=2, run__evaluate=False, parallel__strategy="fsdp"
        )
    sharded = latest_sharded(run / "checkpoints")
    assert sharded is not None, "the FSDP run wrote no dcp-* checkpoint"
    dcp_to_torch_save(sharded, root / "gathered.pt")
    state = torch.load(root / "gathered.pt", weights_only=False)["model"]  # our own file, not a download
    return WeightSource("fsdp", run, _backbone_of(state), True, None, None)


@pytest.fixture(scope="session")
def source_vissl(
    tiny_state: dict,
    tiny_classifier_weights,
    tmp_path_factory: pytest.TempPathFactory,  # noqa: ANN001
) -> WeightSource:
    """The tiny run's trunk and SwAV head in VISSL's layout (as SEER's released files), and a fine-tuned one."""
    import torch
    from support import WeightSource

    from openseer.weights.vissl import to_vissl_checkpoint

    root = tmp_path_factory.mktemp("vissl")
    path = root / "model_final_checkpoint_phase1.torch"
    torch.save(to_vissl_checkpoint(_backbone_of(tiny_state), _head_of(tiny_state)), path)
    clf = tiny_classifier_weights
    finetuned = root / "model_finetuned_in3_phase0.torch"
    torch.save(to_vissl_checkpoint(clf.backbone, classifier=clf.classifier), finetuned)
    return WeightSource("vissl", path, _backbone_of(tiny_state), True, finetuned, ["0", "1", "2"])


@pytest.fixture(scope="session")
def source_timm(
    tiny_state: dict,
    tiny_classifier_weights,
    tmp_path_factory: pytest.TempPathFactory,  # noqa: ANN001
) -> WeightSource:
    """The tiny run's backbone as a timm Hub ``model.safetensors``, and a fine-tuned ``pytorch_model.bin``."""
    import torch
    from safetensors.torch import save_file
    from support import WeightSource

    from openseer.weights.timm_weights import to_timm

    root = tmp_path_factory.mktemp("timm")
    backbone = _backbone_of(tiny_state)
    save_file({k: v.contiguous() for k, v in to_timm(backbone).items()}, str(root / "model.safetensors"))
    clf = tiny_classifier_weights
    torch.save(to_timm(clf.backbone, clf.classifier), root / "pytorch_model.bin")
    return WeightSource(
        "timm", root / "model.safetensors", backbone, False, root / "pytorch_model.bin", ["0", "1", "2"]
    )


@pytest.fixture(scope="session")
def source_imported(source_vissl: WeightSource, tmp_path_factory: pytest.TempPathFactory) -> WeightSource:
    """What ``openseer import-weights`` writes: the VISSL file above, and its fine-tuned one with class names."""
    from support import WeightSource

    from openseer.weights import load_weights, save_weights

    root = tmp_path_factory.mktemp("imported")
    path, _ = save_weights(load_weights(source_vissl.path), root / "seer.safetensors")
    assert source_vissl.classifier is not None
    finetuned, _ = save_weights(
        load_weights(source_vissl.classifier, classes=CLASS_NAMES), root / "seer-finetuned.safetensors"
    )
    return WeightSource("imported", path, source_vissl.backbone, True, finetuned, CLASS_NAMES)


@pytest.fixture(scope="session")
def source_exported(
    tiny_run: tuple[Path, Path], tiny_state: dict, tiny_linear: Path, tmp_path_factory: pytest.TempPathFactory
) -> WeightSource:
    """What ``openseer export --format safetensors`` writes: the run's backbone, and a classifier with its head."""
    from support import WeightSource

    from openseer.interop.export import export
    from openseer.weights import load_weights

    root = tmp_path_factory.mktemp("exported")
    (path, _) = export(load_weights(tiny_run[0]), root / "backbone.safetensors", "safetensors")
    (classifier, _) = export(
        load_weights(tiny_linear), root / "classifier.safetensors", "safetensors", with_head=True
    )
    return WeightSource("exported", path, _backbone_of(tiny_state), False, classifier, CLASS_NAMES)


@pytest.fixture
def weight_source(request: pytest.FixtureRequest) -> WeightSource:
    """The source named by the test's parameter (``@pytest.mark.parametrize("weight_source", KINDS,
    indirect=True)``); each is built on first use only."""
    return request.getfixturevalue(f"source_{request.param}")
