"""The sub-commands that use a trained model: predict, neighbors, clusters, report.

Like ``openseer.eval.commands``: flags -> one typed config (``make_config``) -> the module that does the work.
"""

from __future__ import annotations

import argparse

from openseer.eval.commands import CKPT_HELP, add_common_flags, feature_values, make_config, print_json

# ============ predict ============


def _predict(args: argparse.Namespace) -> int:
    from openseer.eval.predict import PredictConfig, format_predictions, run_predict

    cfg = make_config(
        PredictConfig,
        {
            "checkpoint": args.checkpoint,
            "images": args.images or None,
            "data": args.data,
            "topk": args.topk,
            "device": args.device,
        },
        args.set,
    )
    result = run_predict(cfg)
    if args.json:
        print_json(result)
    else:
        print(format_predictions(result))
    return 1 if any("error" in p for p in result["predictions"]) else 0


# ============ neighbors ============


def _neighbors(args: argparse.Namespace) -> int:
    from openseer.eval.neighbors import NeighborsConfig, format_neighbors, run_neighbors

    cfg = make_config(
        NeighborsConfig,
        {
            "checkpoint": args.checkpoint,
            "images": args.images,
            "index": args.index,
            "k": args.k,
            "random_init": args.random_init or None,
            "grid": args.grid,
            "features": feature_values(args),
        },
        args.set,
    )
    result = run_neighbors(cfg)
    if args.json:
        print_json(result)
    else:
        print(format_neighbors(result))
        if cfg.grid:
            print(f"grid: {cfg.grid}")
    return 0


# ============ clusters ============


def _clusters(args: argparse.Namespace) -> int:
    from openseer.eval.clusters import ClustersConfig, format_clusters, run_clusters

    cfg = make_config(
        ClustersConfig,
        {
            "checkpoint": args.checkpoint,
            "data": args.data,
            "clusters": args.top,
            "per_cluster": args.per_cluster,
            "max_images": args.max_images,
            "out_dir": args.out,
            "results": args.results,
            "features": feature_values(args),
        },
        args.set,
    )
    print(format_clusters(run_clusters(cfg)))
    return 0


# ============ report ============


def _report(args: argparse.Namespace) -> int:
    from openseer.eval.report import build_report

    print(f"report: {build_report(args.run_dir, args.out)}")
    return 0


# ============ registration ============


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the sub-commands that use a trained model to the ``openseer`` parser."""
    p = subparsers.add_parser(
        "predict", help="top-k labels of images from a classifier (linear or finetune output)"
    )
    p.add_argument(
        "checkpoint", help="a classifier checkpoint or the output folder of openseer linear/finetune"
    )
    p.add_argument("images", nargs="*", help="image files, or folders of them")
    p.add_argument("--topk", "-k", type=int, help="labels per image (default 5)")
    p.add_argument("--data", help="also score a labelled set (its classes must be the classifier's)")
    p.add_argument("--device", help="auto (default), cpu, cuda ...")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_common_flags(p, features=False)
    p.set_defaults(func=_predict)

    p = subparsers.add_parser("neighbors", help="nearest images of an indexed folder, with cosine scores")
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("images", nargs="+", help="query image files")
    p.add_argument(
        "--index", required=True, help="folder (or labelled set) to search; its features are cached"
    )
    p.add_argument("--k", type=int, help="neighbours per query (default 10)")
    p.add_argument("--grid", help="also write a PNG: each query followed by its neighbours")
    p.add_argument("--random-init", action="store_true", help="use the network at random initialisation")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_common_flags(p)
    p.set_defaults(func=_neighbors)

    p = subparsers.add_parser("clusters", help="what the SwAV prototypes group: grids and an HTML gallery")
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("--data", help="images to assign (default builtin)")
    p.add_argument("--top", type=int, help="largest clusters to draw (default 12)")
    p.add_argument("--per-cluster", type=int, help="images per grid, most confident first (default 32)")
    p.add_argument("--max-images", type=int, help="assign a seeded sample of this many images")
    p.add_argument("--out", help="folder of the grids and index.html (default RUN/eval/clusters)")
    p.add_argument("--results", help="folder of clusters.json (default RUN/eval)")
    add_common_flags(p)
    p.set_defaults(func=_clusters)

    p = subparsers.add_parser("report", help="one self-contained HTML page of a run")
    p.add_argument("run_dir", help="a pretraining run folder")
    p.add_argument("--out", help="output file (default RUN_DIR/report.html)")
    p.set_defaults(func=_report)
