"""The sub-commands that score features: embed, knn, linear, finetune, lowshot (and the flag plumbing shared
with ``openseer.eval.use_commands``).

Each command maps its flags into ONE typed config dataclass (defaults <- flags <- ``--set key=value``), checked by
``openseer.config.from_dict`` before any work, then calls the module that does the work and prints the result.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeVar

from openseer.config import deep_merge, from_dict, parse_overrides, to_dict

T = TypeVar("T")
CKPT_HELP = "a pretraining checkpoint (ckpt-*.pt) or run folder"

# ============ config plumbing ============


def make_config(cls: type[T], values: dict[str, Any], sets: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- flag values (None = not given) <- ``--set`` overrides, validated."""

    def given(d: dict) -> dict:
        return {k: given(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}

    merged = deep_merge(to_dict(cls()), given(values))
    return from_dict(cls, deep_merge(merged, parse_overrides(sets or [])))


def feature_values(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": args.device,
        "bn_recalibrate": args.bn_recalibrate,
        "cache": False if args.no_cache else None,
        "progress": False if args.no_progress else None,
    }


def add_common_flags(p: argparse.ArgumentParser, features: bool = True) -> None:
    if features:
        g = p.add_argument_group("features")
        g.add_argument("--batch-size", type=int, help="images per forward pass (default 256)")
        g.add_argument("--workers", type=int, help="DataLoader workers for image files (default 2)")
        g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
        g.add_argument(
            "--bn-recalibrate",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="re-estimate BatchNorm statistics on the training images first (default: on, as pretraining's "
            "kNN; always on for a random initialisation)",
        )
        g.add_argument("--no-cache", action="store_true", help="recompute features instead of reusing them")
        g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. --set probe.lrs=[0.01,0.1] (repeatable, applied last)",
    )


def split_values(args: argparse.Namespace) -> dict[str, Any]:
    """The values of :func:`add_train_test_flags` (and the checkpoint) for a ``SplitConfig``."""
    keys = ("checkpoint", "train", "test", "holdout", "split_seed", "seed")
    return {key: getattr(args, key) for key in keys}


def add_train_test_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--train",
        help="labelled training set: builtin, an ImageFolder tree or a CSV of path,label (default builtin)",
    )
    p.add_argument(
        "--test",
        help="labelled test set (default: builtin's test split, or --holdout of each class of --train, the split "
        "pretraining holds out)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        help="held-out fraction per class without --test (default: the run's data.holdout)",
    )
    p.add_argument("--split-seed", type=int, help="seed of that split (default: the run's run.seed)")
    p.add_argument("--seed", type=int, help="seed of the random initialisation and of training (default 0)")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, default=str))


# ============ embed ============


def _embed(args: argparse.Namespace) -> int:
    from openseer.eval.embed import EmbedConfig, run_embed

    cfg = make_config(
        EmbedConfig,
        {
            "checkpoint": args.checkpoint,
            "data": args.data,
            "split": args.split,
            "out": args.out,
            "random_init": args.random_init or None,
            "seed": args.seed,
            "features": feature_values(args),
        },
        args.set,
    )
    feats, files = run_embed(cfg)
    print(f"{len(feats.items)} images -> features {tuple(feats.features.shape)}")
    if len(feats.skipped):
        print(feats.skipped.summary() + "\n(every one under 'skipped' in the .json index)")
    for f in files:
        print(f"wrote {f}")
    return 0


# ============ knn ============


def _knn(args: argparse.Namespace) -> int:
    from openseer.eval.knn import KnnConfig, run_knn

    cfg = make_config(
        KnnConfig,
        {
            **split_values(args),
            "k": args.k,
            "temperature": args.temperature,
            "model": "random" if args.random_init else None,
            "results": args.results,
            "features": feature_values(args),
        },
        args.set,
    )
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


# ============ linear ============


def _linear(args: argparse.Namespace) -> int:
    from openseer.eval.linear import LinearConfig, run_linear

    lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else None
    cfg = make_config(
        LinearConfig,
        {
            **split_values(args),
            "model": "random" if args.random_init else None,
            "probe": {"lrs": lrs, "epochs": args.epochs, "val_fraction": args.val_fraction},
            "out_dir": args.out,
            "save": False if args.no_save else None,
            "results": args.results,
            "features": feature_values(args),
        },
        args.set,
    )
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


# ============ finetune ============


def _finetune(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from openseer.eval.finetune import FinetuneConfig, run_finetune

    cfg = make_config(
        FinetuneConfig,
        {
            **split_values(args),
            "init": "random" if args.from_scratch else None,
            "recipe": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
            "out_dir": args.out,
            "results": args.results,
            "device": args.device,
            "workers": args.workers,
            "progress": False if args.no_progress else None,
        },
        args.set,
    )
    with logging_redirect_tqdm():
        result = run_finetune(cfg, resume=args.resume)
    print(
        f"{'supervised from scratch' if cfg.init == 'random' else 'fine-tuned'}: {result['steps']} steps "
        f"(batch {result['batch_size']}, lr {result['base_lr']:.4g}) in {result['seconds'] / 60:.1f} min; "
        f"{result['n_test']} test images: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}"
    )
    print(f"classifier: {result['classifier']}\nresult: {result['result_file']}")
    return 0


# ============ lowshot ============


def _lowshot(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from openseer.eval.lowshot import LowShotConfig, format_lowshot, run_lowshot

    def floats(s: str | None) -> list[float] | None:
        return [float(x) for x in s.split(",")] if s else None

    def ints(s: str | None) -> list[int] | None:
        return [int(x) for x in s.split(",")] if s else None

    values: dict[str, Any] = {
        **split_values(args),
        "fractions": floats(args.fractions),
        "per_class": ints(args.per_class),
        "seeds": ints(args.seeds),
        "protocol": args.protocol,
        "baselines": [b for b in args.baselines.split(",") if b] if args.baselines is not None else None,
        "results": args.results,
        "features": feature_values(args),
    }
    if args.per_class and not args.fractions:
        values["fractions"] = []  # N per class replaces the default 1% / 10%
    cfg = make_config(LowShotConfig, values, args.set)
    with logging_redirect_tqdm():
        result = run_lowshot(cfg)
    if args.json:
        print_json(result)
    else:
        print(format_lowshot(result))
        print(f"result: {result['result_file']}")
    return 0


# ============ registration ============


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the evaluation sub-commands to the ``openseer`` parser."""

    p = subparsers.add_parser("embed", help="pooled backbone features of a folder or labelled set")
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument(
        "--data", help="builtin, builtin:test, a folder, an ImageFolder tree or a CSV (default builtin)"
    )
    p.add_argument("--split", choices=["train", "test"], help="split of 'builtin' (default train)")
    p.add_argument(
        "--out", "-o", help="output .safetensors (+ .json index), or .npy (default features.safetensors)"
    )
    p.add_argument("--random-init", action="store_true", help="the same network at random initialisation")
    p.add_argument("--seed", type=int, help="seed of the random initialisation (default 0)")
    add_common_flags(p)
    p.set_defaults(func=_embed)

    p = subparsers.add_parser("knn", help="weighted cosine kNN accuracy of the features")
    p.add_argument("checkpoint", help=CKPT_HELP)
    add_train_test_flags(p)
    p.add_argument("--k", type=int, help="neighbours (default 200)")
    p.add_argument("--temperature", "-T", type=float, help="vote temperature (default 0.1)")
    p.add_argument("--random-init", action="store_true", help="score the network at random initialisation")
    p.add_argument("--results", help="folder of the JSON result (default RUN/eval)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common_flags(p)
    p.set_defaults(func=_knn)

    p = subparsers.add_parser(
        "linear", help="linear probe on frozen features (one pass, several learning rates)"
    )
    p.add_argument("checkpoint", help=CKPT_HELP)
    add_train_test_flags(p)
    p.add_argument("--lrs", help="comma-separated learning rates per 256 samples (default 0.001,...,1.0)")
    p.add_argument("--epochs", type=int, help="epochs over the cached features (default 100)")
    p.add_argument("--val-fraction", type=float, help="validation share of each class (default 0.1)")
    p.add_argument("--random-init", action="store_true", help="probe the network at random initialisation")
    p.add_argument("--out", help="classifier output folder (default RUN/linear)")
    p.add_argument("--no-save", action="store_true", help="do not write a classifier checkpoint")
    p.add_argument("--results", help="folder of the JSON result (default RUN/eval)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common_flags(p)
    p.set_defaults(func=_linear)

    p = subparsers.add_parser(
        "finetune", help="fine-tune backbone + new linear head end to end (SEER recipe)"
    )
    p.add_argument("checkpoint", help=CKPT_HELP)
    add_train_test_flags(p)
    p.add_argument("--epochs", type=float, help="epochs (default 35; milestones scale with it)")
    p.add_argument("--batch-size", type=int, help="batch (default 256, capped at the training-set size)")
    p.add_argument("--lr", type=float, help="learning rate per 256 images (default 0.0125)")
    p.add_argument(
        "--from-scratch", action="store_true", help="random initialisation: the supervised baseline"
    )
    p.add_argument("--out", help="checkpoint folder (default RUN/finetune or RUN/finetune-scratch)")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    p.add_argument("--results", help="folder of the JSON result (default RUN/eval)")
    p.add_argument("--device", help="auto (default), cpu, cuda ...")
    p.add_argument("--workers", type=int, help="DataLoader workers for image files (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_flags(p, features=False)
    p.set_defaults(func=_finetune)

    p = subparsers.add_parser(
        "lowshot", help="1%% / 10%% of the labels, several seeds, against the baselines"
    )
    p.add_argument("checkpoint", help=CKPT_HELP)
    add_train_test_flags(p)
    p.add_argument("--fractions", help="label fractions per class, comma-separated (default 0.01,0.1)")
    p.add_argument("--per-class", help="or images per class, comma-separated (e.g. 1,5,10)")
    p.add_argument("--seeds", help="subset seeds, comma-separated (default 0,1,2)")
    p.add_argument(
        "--protocol", choices=["linear", "finetune"], help="for the pretrained network (default linear)"
    )
    p.add_argument("--baselines", help="comma-separated from random,supervised (default both; '' for none)")
    p.add_argument("--results", help="folder of the JSON result (default RUN/eval)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common_flags(p)
    p.set_defaults(func=_lowshot)
