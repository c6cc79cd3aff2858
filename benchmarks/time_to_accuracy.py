"""Time to accuracy on this CPU: kNN top-1 on the CIFAR-10 holdout after budgeted pretraining runs of several
lengths, for openseer's cpu preset and for lightly's CIFAR-10 SwAV recipe.

Each budget is its own run from scratch, since the learning-rate schedule follows the budget
(``run.budget_minutes``). Data as ``vs_lightly.py`` and ``pretrain_knn.py``: the CIFAR-10 folder of
``../shared/data`` with 10% of each class held out (seed 0); kNN k=200, T=0.1, BatchNorm statistics re-estimated
on un-augmented training images, the same scorer for both libraries. lightly runs ``vs_lightly.py``'s recipe
(CIFAR ResNet-18, 2x32 crops, Adam, batch 128, cosine over the budget) through its own function.

Recorded per run (``<out>/results.json``): kNN top-1/top-5, images/s over the training time, the fast paths
``auto`` chose, the seconds it spent choosing, their share of the budget, where the choice came from and why,
the compile seconds, and the wall-clock seconds of the whole
run (data, kNN at random init and at the end included). Also recorded: CPU model, cores, fp32 and bf16 matrix
product peaks measured at the start. A PNG plots kNN top-1 against minutes for both.

    python benchmarks/time_to_accuracy.py --minutes 5,10,20,40          # ~150 minutes with lightly
    python benchmarks/time_to_accuracy.py --minutes 1 --per-class 500   # smoke run on 5,000 images
    python benchmarks/time_to_accuracy.py --minutes 5,20 --skip-lightly run.compile=false
    python benchmarks/time_to_accuracy.py --keep        # add only the budgets <out>/results.json lacks

With ``--keep`` the runs already in ``<out>/results.json`` (same overrides, same data) are kept and only the
missing budgets run, so a sweep longer than one sitting is finished in several; each run records the fp32
matrix-product peak and the load average measured just before it, since the machine's speed moves between
sittings.

Last line: ``knn_<M>m=<x> ... choosing_s_<M>m=<x> choosing_share_<M>m=<x> ... lightly_<M>m=<x> ...
bf16=<native|emulated> bf16_flag=<flag> cpu=<model> imgs_per_s=<x>`` (one knn/choosing/lightly figure per
budget: ``choosing_s`` is what ``auto`` spent choosing at that run's start, ``choosing_share`` its share of the
budget, the later runs of a sweep reusing what the first one recorded; ``bf16_flag`` is the CPU flag that makes
bf16 native, ``none`` where it is emulated; ``imgs_per_s`` is openseer's over all its runs' training time).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import cifar10_folder, machine, matmul_peak_gflops  # the sibling module (on sys.path when run)

from openseer.api import pretrain  # trains, then the one end-of-run evaluation
from openseer.config import load_config
from openseer.fileio.atomic import atomic_write_text
from openseer.hardware import bf16_support
from openseer.train.autotune import RUN_FILE
from openseer.train.config import PretrainConfig
from openseer.train.data import prepare_data


def subset_folder(root: Path, per_class: int) -> Path:
    """A folder of links to the first ``per_class`` images of each class of ``root`` (smoke runs: the kNN
    scoring of the full set takes minutes on a CPU)."""
    target = root.parent / f"{root.name}-{per_class}-per-class"
    for cls in sorted(d for d in root.iterdir() if d.is_dir()):
        (target / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            link = target / cls.name / f.name
            if not link.is_symlink():
                link.symlink_to(f.resolve())
    return target


def _label(minutes: float) -> str:
    return f"{minutes:g}m"


def sitting(device: torch.device) -> dict:
    """When a run starts and how fast the machine is then: the fp32 peak and the load average (one sweep's
    runs can come from several sittings, and this machine's speed moves between them)."""
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "peak_fp32_gflops": matmul_peak_gflops(device, torch.float32, 2048),
        "load_average": os.getloadavg()[0],
    }


def openseer_run(source: str, minutes: float, out: Path, overrides: list[str]) -> dict:
    """The cpu preset for ``minutes`` on the CIFAR-10 folder; its kNN, speed, fast paths and times."""
    run_dir = out / f"openseer-{_label(minutes)}"
    cfg = load_config(
        PretrainConfig,
        ["cpu"],
        [
            f"data.source={source}",
            "data.labels=folder",
            "data.holdout=0.1",
            "run.seed=0",
            f"run.budget_minutes={minutes}",
            f"run.out_dir={run_dir}",
            "run.evaluate=true",
            "run.progress=false",
            *overrides,
        ],
    )
    start = time.perf_counter()
    result = pretrain(cfg)
    wall = time.perf_counter() - start
    choice = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).exists() else {}
    # compiled while choosing (the choosing comes out of the budget), or, when the choice came from the cache, at
    # the first step (that step's time beyond an average one): inside the budget either way
    compiled_now = bool(choice.get("compile")) and choice.get("source") != "cache"
    compiled_later = bool(choice.get("compile")) and choice.get("source") == "cache"
    first_step = result.first_step_seconds or 0.0
    average_step = result.train_seconds / max(result.steps, 1)
    compile_now_s = (choice.get("compile_s") or 0.0) if compiled_now else 0.0
    compile_later_s = max(0.0, first_step - average_step) if compiled_later else 0.0
    record = {
        "minutes": minutes,
        "knn_top1": result.evaluation["knn_top1"],
        "knn_top5": result.evaluation["knn_top5"],
        "knn_top1_random": result.evaluation["knn_top1_random"],
        "steps": result.steps,
        "images_seen": result.images_seen,
        "train_seconds": result.train_seconds,
        "imgs_per_s": result.images_seen / max(result.train_seconds, 1e-9),
        "precision": choice.get("precision"),
        "compile": choice.get("compile"),
        "autotune_seconds": choice.get("autotune_s"),
        "choosing_seconds": choice.get("autotune_s") or 0.0,
        "choosing_share": (choice.get("autotune_s") or 0.0) / (minutes * 60),
        "choosing_source": choice.get("source"),
        "choosing_reason": choice.get("reason"),
        "compile_seconds": compile_now_s,
        "compile_in_budget_seconds": compile_now_s + compile_later_s,
        "first_step_seconds": result.first_step_seconds,
        "wall_seconds": wall,
    }
    print(
        f"openseer {minutes:g} min: kNN top-1 {record['knn_top1']:.4f}, {record['imgs_per_s']:.1f} img/s, "
        f"precision={record['precision']} compile={record['compile']}, choosing "
        f"{record['choosing_seconds']:.1f} s ({record['choosing_share']:.1%}, {record['choosing_source']}), "
        f"wall {wall:.0f} s"
    )
    return record


def lightly_run(source: str, minutes: float) -> dict:
    """lightly's CIFAR-10 SwAV recipe for ``minutes`` (vs_lightly.py), scored with the same kNN."""
    import vs_lightly  # a sibling script; imports lightly, an optional 'bench' dependency

    cfg = load_config(PretrainConfig, ["cpu"], [f"data.source={source}"])
    cached = prepare_data(replace(cfg.data, labels="folder", holdout=0.1), seed=0)
    files = prepare_data(replace(cfg.data, labels="folder", holdout=0.1, cache_size=None), seed=0)
    knn_cfg = replace(cfg, model=replace(cfg.model, channels_last=False))  # lightly's contiguous tensors
    start = time.perf_counter()
    vs_lightly.lightly_recipe_knn(cached, list(files.train_paths), minutes, knn_cfg)
    wall = time.perf_counter() - start
    record = json.loads(vs_lightly.LIGHTLY_RECORD.read_text())  # what that run measured
    record.update(wall_seconds=wall, compile_seconds=0.0)
    print(f"lightly {minutes:g} min: kNN top-1 {record['knn_top1']:.4f}, {record['imgs_per_s']:.1f} img/s")
    return record


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in (
        ("openseer (cpu preset)", results["openseer"]),
        ("lightly (CIFAR-10 SwAV)", results["lightly"]),
    ):
        if runs:
            pts = sorted((r["minutes"], r["knn_top1"]) for r in runs)
            ax.plot([m for m, _ in pts], [k for _, k in pts], marker="o", label=name)
    ax.set_xlabel("pretraining budget (minutes)")
    ax.set_ylabel("kNN top-1, CIFAR-10 holdout")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", default="5,10,20,40", help="comma-separated budgets, one run each")
    ap.add_argument("--lightly-minutes", default=None, help="budgets for lightly (default: --minutes)")
    ap.add_argument("--skip-lightly", action="store_true")
    ap.add_argument("--out", default="runs/time-to-accuracy")
    ap.add_argument(
        "--per-class", type=int, default=None, help="use only this many images of each class (smoke runs)"
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the runs <out>/results.json has and run only the missing ones",
    )
    ap.add_argument("overrides", nargs="*", help="key=value overrides of openseer's cpu preset")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    minutes = [float(m) for m in args.minutes.split(",")]
    lightly_minutes = (
        [] if args.skip_lightly else [float(m) for m in (args.lightly_minutes or args.minutes).split(",")]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu")
    hardware, cores = machine(device)
    peaks = {
        p: matmul_peak_gflops(device, dt, 2048)
        for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    print(
        f"cpu={hardware} cores={cores} matmul peak fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f}"
    )
    folder = cifar10_folder()
    source = str(subset_folder(folder, args.per_class) if args.per_class else folder)
    results: dict = {
        "cpu": hardware,
        "cores": cores,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "peak_gflops": peaks,
        "load_average": os.getloadavg()[0],  # other jobs on the machine slow every figure down
        "data": source,
        "overrides": args.overrides,
        "openseer": [],
        "lightly": [],
    }

    previous = out / "results.json"
    if args.keep and previous.exists():
        kept = json.loads(previous.read_text())
        if kept["overrides"] != args.overrides or kept["data"] != source:
            raise SystemExit(
                f"--keep: {previous} was measured with overrides {kept['overrides']} on {kept['data']}, "
                f"not {args.overrides} on {source}; choose another --out"
            )
        for run in kept["openseer"] + kept["lightly"]:  # runs from before per-run sittings were recorded
            run.setdefault("peak_fp32_gflops", kept["peak_gflops"]["fp32"])
            run.setdefault("load_average", kept["load_average"])
        results["openseer"], results["lightly"] = kept["openseer"], kept["lightly"]
        print(
            f"kept from {previous}: openseer {[r['minutes'] for r in kept['openseer']]}, "
            f"lightly {[r['minutes'] for r in kept['lightly']]}"
        )

    def save() -> None:  # after every run, so an interrupted sweep keeps what it measured
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))

    for name, budgets, run in (
        ("openseer", minutes, lambda m: openseer_run(source, m, out, args.overrides)),
        ("lightly", lightly_minutes, lambda m: lightly_run(source, m)),
    ):
        for m in budgets:
            if any(r["minutes"] == m for r in results[name]):
                continue  # kept from an earlier sitting
            record = sitting(device)
            record.update(run(m))
            results[name].append(record)
            results[name].sort(key=lambda r: r["minutes"])
            save()
    png = out / "time_to_accuracy.png"
    peaks_seen = [r["peak_fp32_gflops"] for r in results["openseer"] + results["lightly"]] or [peaks["fp32"]]
    plot(
        results,
        png,
        f"{hardware}, {cores} cores, fp32 matmul peak {min(peaks_seen):.0f}-{max(peaks_seen):.0f} GFLOP/s",
    )
    print(f"results: {out / 'results.json'}, plot: {png}")
    runs = [r for r in results["openseer"] if r["minutes"] in minutes]
    rate = sum(r["images_seen"] for r in runs) / max(sum(r["train_seconds"] for r in runs), 1e-9)
    figures = [f"knn_{_label(r['minutes'])}={r['knn_top1']:.4f}" for r in runs]
    figures += [
        f"choosing_s_{_label(r['minutes'])}={r.get('choosing_seconds', float('nan')):.1f} "
        f"choosing_share_{_label(r['minutes'])}={r.get('choosing_share', float('nan')):.4f}"
        for r in runs
    ]
    figures += [
        f"lightly_{_label(r['minutes'])}={r['knn_top1']:.4f}"
        for r in results["lightly"]
        if r["minutes"] in lightly_minutes
    ]
    support, flag = bf16_support(device)
    print(
        " ".join(
            [
                *figures,
                f"bf16={support}",
                f"bf16_flag={flag}",
                f"cpu={hardware.replace(' ', '_')}",
                f"imgs_per_s={rate:.1f}",
            ]
        )
    )


if __name__ == "__main__":
    main()
