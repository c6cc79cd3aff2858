"""The commands that use a trained model: predict, neighbors, clusters, report."""

from __future__ import annotations

import argparse

from openseer.cli.command import JSON, Command, Positional, print_json
from openseer.cli.evaluate import RUN


def _predict(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a PredictConfig
    from openseer.eval.predict import format_predictions, run_predict

    result = run_predict(cfg)
    if args.json:
        print_json(result)
    else:
        print(format_predictions(result))
    return 1 if any("error" in p for p in result["predictions"]) else 0


def _neighbors(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a NeighborsConfig
    from openseer.eval.neighbors import format_neighbors, run_neighbors

    result = run_neighbors(cfg)
    if args.json:
        print_json(result)
    else:
        print(format_neighbors(result))
        if cfg.grid:
            print(f"grid: {cfg.grid}")
    return 0


def _clusters(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a ClustersConfig
    from openseer.eval.clusters import format_clusters, run_clusters

    print(format_clusters(run_clusters(cfg)))
    return 0


def _report(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a ReportConfig
    from openseer.eval.report import build_report

    print(f"report: {build_report(cfg.run_dir, cfg.out)}")
    return 0


COMMANDS = [
    Command(
        name="predict",
        help="top-k labels of images from a classifier (linear or finetune output)",
        description="Top-k labels of images from a classifier (the output of openseer linear or finetune); "
        "exit status 1 when some images could not be read. Example: openseer predict runs/cpu/linear "
        "a.jpg b.jpg topk=3",
        config="openseer.eval.predict:PredictConfig",
        run=_predict,
        positionals=(Positional("CLASSIFIER", "checkpoint"), Positional("IMAGE", "images", many=True)),
        switches=(JSON,),
    ),
    Command(
        name="neighbors",
        help="nearest images of an indexed folder, with cosine scores",
        description="Nearest images of an indexed folder, with cosine scores. Example: openseer neighbors "
        "runs/cpu photo.jpg index=~/photos",
        config="openseer.eval.neighbors:NeighborsConfig",
        run=_neighbors,
        positionals=(RUN, Positional("IMAGE", "images", many=True)),
        switches=(JSON,),
    ),
    Command(
        name="clusters",
        help="what the SwAV prototypes group: grids and an HTML gallery",
        description="What the SwAV prototypes group: image grids of the largest clusters and an HTML gallery. "
        "Example: openseer clusters runs/cpu data=~/photos",
        config="openseer.eval.clusters:ClustersConfig",
        run=_clusters,
        positionals=(RUN,),
    ),
    Command(
        name="report",
        help="one self-contained HTML page of a run",
        config="openseer.eval.report:ReportConfig",
        run=_report,
        positionals=(Positional("RUN", "run_dir"),),
    ),
]
