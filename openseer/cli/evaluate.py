"""The commands that score features: embed, knn, linear, finetune, lowshot.

Each runs the module that does the work on its resolved config (:mod:`openseer.cli.command`) and prints the
result.
"""

from __future__ import annotations

import argparse

from openseer.cli.command import JSON, Command, Positional, Switch, print_json

RUN = Positional("RUN", "checkpoint")


def _embed(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - an EmbedConfig
    from openseer.eval.embed import run_embed

    feats, files = run_embed(cfg)
    print(f"{len(feats.items)} images -> features {tuple(feats.features.shape)}")
    if len(feats.skipped):
        print(feats.skipped.summary() + "\n(every one under 'skipped' in the .json index)")
    for f in files:
        print(f"wrote {f}")
    return 0


def _knn(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a KnnConfig
    from openseer.eval.knn import run_knn

    result = run_knn(cfg)
    if args.json:
        print_json(result)
    else:
        print(
            f"kNN (k={result['k']}, T={result['temperature']:g}, {result['model']}) "
            f"{result['n_train']} -> {result['n_test']} images: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}"
        )
        print(f"result: {result['result_file']}")
    return 0


def _linear(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a LinearConfig
    from openseer.eval.linear import run_linear

    result = run_linear(cfg)
    if args.json:
        print_json(result)
        return 0
    print(
        "validation top-1 per learning rate: "
        + ", ".join(f"{lr}: {v:.4f}" for lr, v in result["val_top1"].items())
    )
    print(
        f"linear probe ({result['model']}, lr {result['lr']:g}) on {result['n_test']} test images: "
        f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}"
    )
    if "classifier" in result:
        print(f"classifier: {result['classifier']}")
    print(f"result: {result['result_file']}")
    return 0


def _finetune(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a FinetuneConfig
    from tqdm.contrib.logging import logging_redirect_tqdm

    from openseer.eval.finetune import run_finetune

    with logging_redirect_tqdm():
        result = run_finetune(cfg, resume=args.resume)
    print(
        f"{'supervised from scratch' if cfg.init == 'random' else 'fine-tuned'}: {result['steps']} steps "
        f"(batch {result['batch_size']}, lr {result['base_lr']:.4g}) in {result['seconds'] / 60:.1f} min; "
        f"{result['n_test']} test images: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}"
    )
    print(f"classifier: {result['classifier']}\nresult: {result['result_file']}")
    return 0


def _lowshot(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a LowShotConfig
    from tqdm.contrib.logging import logging_redirect_tqdm

    from openseer.eval.lowshot import format_lowshot, run_lowshot

    with logging_redirect_tqdm():
        result = run_lowshot(cfg)
    if args.json:
        print_json(result)
    else:
        print(format_lowshot(result))
        print(f"result: {result['result_file']}")
    return 0


COMMANDS = [
    Command(
        name="embed",
        help="pooled backbone features of a folder or labelled set",
        description="Pooled backbone features of a folder or labelled set. Example: openseer embed runs/cpu "
        "data=~/photos out=photos.safetensors",
        config="openseer.eval.embed:EmbedConfig",
        run=_embed,
        positionals=(RUN,),
    ),
    Command(
        name="knn",
        help="weighted cosine kNN accuracy of the features",
        description="Weighted cosine kNN accuracy of the features. Example: openseer knn runs/cpu "
        "train=~/labelled k=20",
        config="openseer.eval.knn:KnnConfig",
        run=_knn,
        positionals=(RUN,),
        switches=(JSON,),
    ),
    Command(
        name="linear",
        help="linear probe on frozen features (one pass, several learning rates)",
        description="Linear probe on frozen, cached features: one pass trains a head per learning rate, the "
        "best on a validation share is scored. Example: openseer linear runs/cpu train=~/labelled "
        "probe.lrs=[0.01,0.1]",
        config="openseer.eval.linear:LinearConfig",
        run=_linear,
        positionals=(RUN,),
        switches=(JSON,),
    ),
    Command(
        name="finetune",
        help="fine-tune backbone + new linear head end to end (SEER recipe)",
        description="Fine-tune the backbone and a new linear head end to end (SEER's recipe, scaled to the "
        "data); init=random trains the same network from scratch, the supervised baseline. Example: openseer "
        "finetune runs/cpu train=~/labelled recipe.epochs=35",
        config="openseer.eval.finetune:FinetuneConfig",
        run=_finetune,
        positionals=(RUN,),
        switches=(Switch("--resume", "continue from the newest valid checkpoint in out_dir"),),
    ),
    Command(
        name="lowshot",
        help="1%% / 10%% of the labels, several seeds, against the baselines",
        description="Low-shot evaluation: a few labels per class, several seeds, mean and spread, against a "
        "random initialisation and supervised training from scratch. Example: openseer lowshot runs/cpu "
        "per_class=[1,5] fractions=[]",
        config="openseer.eval.lowshot:LowShotConfig",
        run=_lowshot,
        positionals=(RUN,),
        switches=(JSON,),
    ),
]
