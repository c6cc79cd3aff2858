"""Linear probe: BN in front, a grid of learning rates trained in one pass, chosen on a validation split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import FAST_EVAL

from openseer.cli import main as cli_main
from openseer.eval.classifier import load_classifier
from openseer.eval.linear import (
    MultiHeadProbe,
    ProbeConfig,
    fit_linear_probe,
    score_head,
    train_probes,
)
from openseer.eval.metrics import confusion_matrix
from openseer.fileio.checkpoint import load_checkpoint, resolve_checkpoint


def separable(
    n_per_class: int, seed: int, classes: int = 4, dim: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around far-apart centres, shifted and scaled so that only a normalised probe is easy."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), dim, generator=g)
    return 50 + 20 * x, y


def test_probe_is_near_perfect_on_linearly_separable_features() -> None:
    train_x, train_y = separable(60, seed=0)
    test_x, test_y = separable(20, seed=1)
    result = fit_linear_probe(train_x, train_y, 4, ProbeConfig(epochs=30, batch_size=64))
    top1, top5, confusion = score_head(result.head, test_x, test_y, 4)
    assert top1 >= 0.98 and top5 == 1.0
    assert confusion.sum() == len(test_y) and confusion.diag().sum() >= 0.98 * len(test_y)
    assert isinstance(result.head[0], torch.nn.BatchNorm1d) and not result.head[0].affine


def test_heads_share_batches_but_not_gradients() -> None:
    """Head 0 of a two-lr grid ends exactly where a one-lr probe with the same lr ends: one pass, independent."""
    x, y = separable(20, seed=0)
    both = train_probes(x, y, 4, ProbeConfig(lrs=[0.1, 3.0], epochs=3, batch_size=16))
    alone = train_probes(x, y, 4, ProbeConfig(lrs=[0.1], epochs=3, batch_size=16))
    assert torch.allclose(both.heads[0].weight, alone.heads[0].weight, atol=1e-6)
    assert not torch.allclose(both.heads[1].weight, alone.heads[0].weight)
    assert both(x).shape == (2, len(x), 4)


def test_learning_rate_is_chosen_on_validation() -> None:
    x, y = separable(30, seed=0)
    result = fit_linear_probe(x, y, 4, ProbeConfig(lrs=[1e-7, 0.3], epochs=5, batch_size=32))
    assert result.lr == 0.3 and result.val_top1[0.3] > result.val_top1[1e-7]


def test_tiny_sets_fall_back_to_training_accuracy() -> None:
    x, y = separable(1, seed=0)  # one sample per class: no validation split possible
    result = fit_linear_probe(x, y, 4, ProbeConfig(lrs=[0.1], epochs=3))
    assert set(result.val_top1) == {0.1}


def test_confusion_matrix_counts_true_by_predicted() -> None:
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    target = torch.tensor([0, 1, 2, 2])
    assert confusion_matrix(logits, target, 3).tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_multihead_bn_has_no_parameters() -> None:
    probe = MultiHeadProbe(8, 3, heads=4)
    assert sum(p.numel() for p in probe.bn.parameters()) == 0 and len(probe.heads) == 4


@pytest.mark.slow
def test_linear_command_writes_result_and_a_classifier(fresh_run, tmp_path: Path) -> None:
    run, folder = fresh_run
    argv = ["linear", str(run), f"train={folder}", "probe.epochs=5", "probe.lrs=[0.01,0.1]", *FAST_EVAL]
    assert cli_main(argv) == 0
    result = json.loads((run / "eval" / "linear.json").read_text())
    assert result["kind"] == "linear" and result["model"] == "pretrained" and 0 <= result["top1"] <= 1
    assert result["n_test"] == 9 and result["n_train"] == 27  # the run's own hold-out: 25% of 12 per class
    assert set(result["val_top1"]) == {"0.01", "0.1"} and len(result["confusion"]) == 3
    state = load_checkpoint(resolve_checkpoint(run / "linear"))
    assert state["head_bn"] and state["classes"] == ["class0", "class1", "class2"]
    clf = load_classifier(run / "linear")  # the probe's BatchNorm is folded into its Linear layer on load
    assert clf.classes == ["class0", "class1", "class2"] and not clf.head_bn and clf.resize == "center_crop"
    assert (
        cli_main(
            [
                "linear",
                str(run),
                f"train={folder}",
                "probe.epochs=2",
                "model=random",
                "save=false",
                *FAST_EVAL,
            ]
        )
        == 0
    )
    assert json.loads((run / "eval" / "linear-random.json").read_text())["model"] == "random"
