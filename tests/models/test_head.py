"""SwAV head and model (Caron et al. 2020, Sec. 3; swav src/resnet50.py head + prototypes, main_swav.py)."""

import pytest
import torch
from torch import nn

from openseer.models.head import SwAVHead, SwAVModel


def _head(use_bn=True, hidden=(16,), k=10):
    torch.manual_seed(0)
    return SwAVHead(in_dim=8, hidden=list(hidden), out_dim=4, n_prototypes=k, use_bn=use_bn)


def _row_norms(head):
    return head.prototypes.weight.detach().norm(dim=1)


def test_prototypes_are_bias_free_and_unit_rows_at_init():
    head = _head()
    assert head.prototypes.bias is None
    assert head.prototypes.weight.shape == (10, 4)
    torch.testing.assert_close(_row_norms(head), torch.ones(10))


def test_normalize_prototypes_after_manual_change():
    head = _head()
    with torch.no_grad():
        head.prototypes.weight.mul_(torch.linspace(0.1, 5.0, 10).view(-1, 1))
    before = head.prototypes.weight.detach().clone()
    head.normalize_prototypes()
    torch.testing.assert_close(_row_norms(head), torch.ones(10))
    # a projection onto the sphere: each row keeps its direction
    cos = nn.functional.cosine_similarity(head.prototypes.weight.detach(), before, dim=1)
    torch.testing.assert_close(cos, torch.ones(10))


def test_normalize_after_an_optimiser_step():
    head = _head()
    opt = torch.optim.SGD(head.parameters(), lr=5.0)
    _, scores = head(torch.randn(6, 8))
    (scores**2).sum().backward()
    opt.step()
    assert not torch.allclose(_row_norms(head), torch.ones(10), atol=1e-3)  # the step left the sphere
    head.normalize_prototypes()
    torch.testing.assert_close(_row_norms(head), torch.ones(10))
    assert head.prototypes.weight.requires_grad  # normalising does not detach the parameter


def test_embeddings_are_unit_norm_and_scores_are_cosines():
    head = _head().eval()
    x = torch.randn(7, 8) * 50
    z, scores = head(x)
    assert z.shape == (7, 4) and scores.shape == (7, 10)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(7))
    # cosine of each projection with each prototype, by torch's own formula (the rows are unit at init)
    cosines = nn.functional.cosine_similarity(
        head.projection(x)[:, None], head.prototypes.weight[None], dim=-1
    )
    torch.testing.assert_close(scores, cosines)
    assert scores.abs().max() <= 1 + 1e-5


@pytest.mark.parametrize("use_bn", [True, False])
@pytest.mark.parametrize("hidden", [(16,), (16, 12)])
def test_batchnorm_per_flag_and_layer_sizes(use_bn, hidden):
    head = _head(use_bn=use_bn, hidden=hidden)
    bns = [m for m in head.projection if isinstance(m, nn.BatchNorm1d)]
    linears = [m for m in head.projection if isinstance(m, nn.Linear)]
    assert len(bns) == (len(hidden) if use_bn else 0)
    assert [bn.num_features for bn in bns] == (list(hidden) if use_bn else [])
    assert [(m.in_features, m.out_features) for m in linears] == list(
        zip((8, *hidden), (*hidden, 4), strict=True)
    )
    assert sum(isinstance(m, nn.ReLU) for m in head.projection) == len(hidden)
    assert not isinstance(head.projection[-1], nn.ReLU | nn.BatchNorm1d)  # the embedding is linear


def test_seer_head_shape_on_meta():
    # SEER RG-256GF: 10444-8192-8192-256, no BN, 16,000 prototypes
    with torch.device("meta"):
        head = SwAVHead(10444, [8192, 8192], 256, 16000, use_bn=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    expected = (10444 * 8192 + 8192) + (8192 * 8192 + 8192) + (8192 * 256 + 256) + 256 * 16000
    assert sum(p.numel() for p in head.parameters()) == expected


class RecordingBackbone(nn.Module):
    """Stub trunk: records input batch shapes; features = per-image mean of each channel, repeated."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []
        self.num_features = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return x.mean(dim=(2, 3)).repeat(1, 3)[:, :8] * torch.arange(1, 9)


def _crops(b=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, 3, 32, 32, generator=g) + i for i in range(2)] + [
        torch.randn(b, 3, 16, 16, generator=g) - i for i in range(4)
    ]


def test_model_groups_same_size_crops_into_one_backbone_call():
    b = 3
    backbone = RecordingBackbone()
    model = SwAVModel(backbone, _head(use_bn=False)).eval()
    model(_crops(b))
    assert backbone.calls == [(2 * b, 3, 32, 32), (4 * b, 3, 16, 16)]


def test_model_groups_only_consecutive_runs():
    b = 2
    backbone = RecordingBackbone()
    model = SwAVModel(backbone, _head(use_bn=False)).eval()
    big, small = torch.zeros(b, 3, 32, 32), torch.zeros(b, 3, 16, 16)
    model([big, small, small, big])
    assert backbone.calls == [(b, 3, 32, 32), (2 * b, 3, 16, 16), (b, 3, 32, 32)]


@pytest.mark.parametrize("use_bn", [False, True])
def test_model_outputs_are_crop_major(use_bn):
    b = 3
    crops = _crops(b)
    model = SwAVModel(RecordingBackbone(), _head(use_bn=use_bn)).eval()  # eval: BN uses running stats
    z, scores = model(crops)
    assert z.shape == (6 * b, 4) and scores.shape == (6 * b, 10)
    for i, crop in enumerate(crops):  # crop i's samples are rows i*B .. (i+1)*B - 1
        zi, si = model.head(model.backbone(crop))
        torch.testing.assert_close(z[i * b : (i + 1) * b], zi)
        torch.testing.assert_close(scores[i * b : (i + 1) * b], si)


def test_gradients_reach_backbone_and_prototypes():
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = SwAVModel(backbone, _head(use_bn=False))
    _, scores = model(_crops(2))
    scores.sum().backward()
    assert backbone[0].weight.grad is not None and backbone[0].weight.grad.abs().sum() > 0
    assert model.head.prototypes.weight.grad.abs().sum() > 0


# ---- prototype scores in float32 under autocast ----


def _head_with_close_prototypes(k=50, seed=0):
    """A head (eval: BatchNorm uses running statistics) whose prototypes lie near some embeddings, so that
    scores reach ~0.98, where bfloat16's spacing is 2^-8 and rounding moves a score by up to 2^-9."""
    torch.manual_seed(seed)
    head = SwAVHead(64, [128], 32, k, use_bn=True).eval()
    x = torch.randn(256, 64)
    with torch.no_grad():
        z, _ = head(x)
        near = z[:k] + 0.3 * torch.randn(k, 32) / 32**0.5
        head.prototypes.weight.copy_(nn.functional.normalize(near, dim=1))
    return head, x


def _projection_output(head, x):
    """The projection MLP's output (bfloat16 under autocast), as the head's forward pass computes it."""
    seen = {}
    handle = head.projection.register_forward_hook(lambda m, i, out: seen.setdefault("h", out))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        z, scores = head(x)
    handle.remove()
    return seen["h"], z, scores


def test_scores_and_embeddings_are_float32_under_bf16_autocast():
    head, x = _head_with_close_prototypes()
    h, z, scores = _projection_output(head, x)
    assert h.dtype == torch.bfloat16  # the MLP itself still runs in the autocast dtype
    assert z.dtype == torch.float32 and scores.dtype == torch.float32
    assert head.prototypes.weight.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(len(x)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("epsilon", [0.05, 0.03])  # SwAV/SEER RG-256GF, SEER 10B
def test_codes_under_bf16_autocast_match_float32_codes(epsilon):
    """From the same bfloat16 projection output, the codes from the head's scores match float64 codes to 1e-5,
    while scores rounded to bfloat16 (what autocast gave before) move the codes by more than 1e-3."""
    from openseer.swav.sinkhorn import sinkhorn_reference

    head, x = _head_with_close_prototypes()
    h, _, scores = _projection_output(head, x)
    w = head.prototypes.weight.detach()
    exact = nn.functional.normalize(h.double(), dim=1) @ w.double().t()
    assert exact.max() > 0.95
    codes_exact = sinkhorn_reference(exact, epsilon, 3)
    codes = sinkhorn_reference(scores.double(), epsilon, 3)
    assert (codes - codes_exact).abs().max() < 1e-5
    rounded = nn.functional.linear(nn.functional.normalize(h.float(), dim=1).bfloat16(), w.bfloat16())
    codes_rounded = sinkhorn_reference(rounded.double(), epsilon, 3)
    assert (codes_rounded - codes_exact).abs().max() > 1e-3


def test_forward_on_the_meta_device_needs_no_autocast():
    with torch.device("meta"):
        head = SwAVHead(8, [16], 4, 10, use_bn=True)
        z, scores = head(torch.empty(5, 8))
    assert z.shape == (5, 4) and scores.shape == (5, 10) and scores.dtype == torch.float32


def test_reset_parameters_redraws_as_at_construction():
    head = _head(use_bn=True)
    with torch.no_grad():
        for p in head.parameters():
            p.fill_(3.0)
        bn = head.projection[1]
        bn.running_mean.fill_(5.0)
    head.reset_parameters()
    torch.testing.assert_close(_row_norms(head), torch.ones(10))
    assert torch.equal(bn.weight, torch.ones(16)) and torch.equal(bn.bias, torch.zeros(16))
    assert torch.equal(bn.running_mean, torch.zeros(16))
    linear = head.projection[0]
    bound = 1 / 8**0.5  # torch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert linear.weight.abs().max() <= bound and linear.weight.std() > bound / 4
