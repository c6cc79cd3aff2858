"""Write a RegNetY checkpoint in SEER's released (VISSL/ClassyVision) layout, as the tests' generator does.

SEER's own files cannot be downloaded everywhere; this stands in for one, with randomly initialised weights, so
that the SEER use case (import-weights, then lowshot / finetune / predict) can be run end to end anywhere:

    python docs/examples/make_seer_checkpoint.py regnety_400mf seer_regnety_400mf.torch
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from openseer.models import SwAVHead, build_backbone
from openseer.weights.vissl import to_vissl_checkpoint


def randomize_batchnorm(module: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine terms, as a trained network has (a freshly built one has 0 and 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return module.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", help="a RegNetY size, e.g. regnety_400mf or regnety_32gf (SEER's smallest)")
    parser.add_argument("out", help="the .torch file to write")
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = randomize_batchnorm(build_backbone(args.arch, zero_init_last_bn=False), seed=1)
    head = randomize_batchnorm(SwAVHead(backbone.num_features, [512], 128, 100, use_bn=True), seed=2)
    torch.save(to_vissl_checkpoint(backbone.state_dict(), head.state_dict()), args.out)
    print(f"wrote {args.out}: {args.arch} trunk and a SwAV head in VISSL's classy_state_dict layout")


if __name__ == "__main__":
    main()
