"""One self-contained HTML page per run: training curves, accuracies against the baselines, low-shot table,
confusion matrix and cluster gallery, every image embedded as a base64 PNG.

Everything is read from the run folder: ``config.yaml``, ``summary.json`` and ``metrics.jsonl`` written by
pretraining, and the ``eval/*.json`` results written by the evaluation commands. Missing pieces are skipped.
Plots use matplotlib's object API (``Figure``, Agg canvas), which leaves the global pyplot backend alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from openseer.config import ConfigError
from openseer.fileio.atomic import atomic_write_text

log = logging.getLogger(__name__)

MODEL_NAMES = {
    "pretrained": "self-supervised",
    "random": "random init",
    "initial": "initial weights",
    "supervised": "supervised from scratch",
}
KIND_NAMES = {"knn": "kNN", "linear": "linear probe", "finetune": "fine-tuning"}


# ============ reading ============


def read_metrics(path: Path) -> list[dict]:
    """The per-step records of metrics.jsonl (lines with a loss); damaged lines are skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "loss" in record and "step" in record:
            out.append(record)
    return out


def read_results(folder: Path) -> list[dict]:
    """Every eval/*.json result (dicts with a 'kind'), sorted by file name."""
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            log.warning("skipping unreadable result %s: %s", path, err)
            continue
        if isinstance(record, dict) and "kind" in record:
            record["_file"] = path.name
            out.append(record)
    return out


# ============ plots ============


def png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def file_data_uri(path: Path) -> str | None:
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    except OSError:
        return None


def _finite(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [
        (r["step"], r[key]) for r in records if isinstance(r.get(key), int | float) and math.isfinite(r[key])
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training(records: list[dict]) -> str:
    """Loss and learning rate against the step, side by side."""
    fig = Figure(figsize=(11, 3.6))
    ax_loss, ax_lr = fig.subplots(1, 2)
    ax_loss.plot(*_finite(records, "loss"), color="tab:blue")
    ax_loss.set(title="SwAV loss", xlabel="step", ylabel="loss")
    ax_lr.plot(*_finite(records, "lr"), color="tab:orange")
    ax_lr.set(title="learning rate", xlabel="step", ylabel="lr")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
    return png_data_uri(fig)


def plot_usage(records: list[dict]) -> str:
    """Prototypes used per logged batch and the usage entropy, against the step."""
    fig = Figure(figsize=(11, 3.6))
    ax = fig.subplots()
    ax.plot(*_finite(records, "protos_used"), color="tab:green", label="prototypes used")
    ax.set(title="cluster usage", xlabel="step", ylabel="prototypes used")
    ax.grid(alpha=0.3)
    steps, entropy = _finite(records, "usage_entropy")
    handles = list(ax.get_lines())
    if entropy:
        twin = ax.twinx()
        handles += twin.plot(steps, entropy, color="tab:purple", linestyle="--", label="usage entropy")
        twin.set_ylabel("usage entropy (normalised)")
    ax.legend(handles=handles, loc="lower left")
    return png_data_uri(fig)


def plot_confusion(matrix: list[list[int]], classes: list[str], title: str) -> str:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    c = len(matrix)
    rows = [[v / max(1, sum(row)) for v in row] for row in matrix]
    side = min(12.0, 2.5 + 0.45 * c)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if c <= 30:
        names = [n if len(n) <= 14 else n[:13] + "…" for n in classes]
        ax.set_xticks(range(c), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
    if c <= 15:
        for i in range(c):
            for j in range(c):
                ax.text(
                    j,
                    i,
                    f"{rows[i][j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rows[i][j] > 0.5 else "black",
                )
    ax.set(title=title, xlabel="predicted", ylabel="true")
    return png_data_uri(fig)


def plot_cluster_sizes(sizes: list[int]) -> str:
    """Cluster sizes sorted from largest to smallest (a flat curve is an even use of the prototypes)."""
    fig = Figure(figsize=(11, 3))
    ax = fig.subplots()
    ordered = sorted(sizes, reverse=True)
    ax.bar(range(len(ordered)), ordered, width=1.0, color="tab:blue")
    ax.set(title="images per prototype (sorted)", xlabel="prototype rank", ylabel="images")
    return png_data_uri(fig)


# A run has "flattened" when, over the last CURVE_TAIL of its steps, and over as many steps just before its
# learning rate first drops (a step decay freezes a curve that was still falling: the drop is no plateau), a
# least-squares line through the logged points changes the loss by less than LOSS_TOL of its level and the
# validation top-1 by less than ACC_TOL. A loss still above STUCK of its first logged value is reported too: a
# rate too small for the budget gives a flat curve that has learnt little.
CURVE_TAIL = 0.1
LOSS_TOL = 0.05
ACC_TOL = 0.02
STUCK = 0.8


def tail_change(
    points: list[dict], key: str, tail: float = CURVE_TAIL, end: float | None = None
) -> tuple[float, float] | None:
    """(change of ``key`` over the ``tail`` of the steps (as a fraction of the last step) that ends at step
    ``end`` (default the last), mean of ``key`` there), from a least-squares line through the logged points in
    that window (the last 3 points up to ``end`` when fewer fall in it); None when fewer than 3 finite points."""
    xs, ys = _finite(points, key)
    if not xs:
        return None
    span = tail * xs[-1]
    stop = xs[-1] if end is None else end
    keep = [i for i, x in enumerate(xs) if x <= stop]
    if len(keep) < 3:
        return None
    n = max(3, sum(xs[i] >= stop - span for i in keep))
    xs, ys = [xs[i] for i in keep[-n:]], [ys[i] for i in keep[-n:]]
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return slope * span, my


def before_decay(points: list[dict]) -> float | None:
    """The last logged step before the learning rate first falls below half its starting value (None when the
    points log no rate or it never falls so)."""
    rated = [p for p in points if isinstance(p.get("lr"), int | float)]
    if not rated:
        return None
    first = rated[0]["lr"]
    for prev, p in zip(rated, rated[1:], strict=False):
        if p["lr"] < 0.5 * first:
            return prev["step"]
    return None


def run_curves(run: dict) -> tuple[list[dict], list[dict]]:
    """(loss curve, validation curve) of one low-shot run: the kept run's own, or for a network trained again
    on the whole subset (no validation images left), the validation run at the chosen learning rate."""
    curve = run.get("curve") or []
    if any("val_top1" in p for p in curve):
        return curve, curve
    return curve, (run.get("val_curves") or {}).get(str(run.get("lr")), [])


def not_flattened(run: dict) -> list[str]:
    """Why the curves of a low-shot run had not flattened (empty when they had, or were not kept)."""
    curve, val = run_curves(run)
    out = []
    pct = f"{100 * CURVE_TAIL:.0f}%"
    for points, key in ((curve, "loss"), (val, "val_top1")):
        windows: list[tuple[float | None, str]] = [(None, f"over the last {pct} of the steps")]
        if (decay := before_decay(points)) is not None:
            windows.append((decay, f"over the {pct} before the learning rate decays"))
        for end, where in windows:
            change = tail_change(points, key, end=end)
            if change is None:
                continue
            if key == "loss" and change[0] < -LOSS_TOL * abs(change[1]):
                out.append(f"loss still falling by {100 * -change[0] / abs(change[1]):.0f}% {where}")
            elif key == "val_top1" and change[0] > ACC_TOL:
                out.append(f"validation top-1 still rising by {100 * change[0]:.1f} points {where}")
    losses = _finite(curve, "loss")[1]
    if len(losses) >= 3:
        last = tail_change(curve, "loss")
        if last is not None and last[1] > STUCK * losses[0]:
            out.append(f"loss barely moved: {losses[0]:.3g} at first, {last[1]:.3g} at the end")
    return out


def plot_lowshot_curves(row: dict, budgets: list[str]) -> str | None:
    """One panel per budget: each seed's training loss (solid, left axis) and validation top-1 (dashed, right
    axis) against the step. None when the result kept no curves (older results)."""
    cells = [row["cells"].get(b, {}).get("runs", []) for b in budgets]
    if not any(run_curves(r)[0] or run_curves(r)[1] for runs in cells for r in runs):
        return None
    fig = Figure(figsize=(4.2 * len(budgets), 2.6), layout="constrained")  # room for the twin axes' labels
    axes = fig.subplots(1, len(budgets), squeeze=False)[0]
    for ax, budget, runs in zip(axes, budgets, cells, strict=True):
        twin = ax.twinx()
        for i, r in enumerate(runs):
            color = f"C{i % 10}"
            curve, val = run_curves(r)
            ax.plot(*_finite(curve, "loss"), color=color, linewidth=1, label=f"seed {r.get('seed', i)}")
            twin.plot(*_finite(val, "val_top1"), color=color, linewidth=1, linestyle="--")
        ax.set(title=f"{row['name']}, {budget}", xlabel="step", ylabel="loss (solid)")
        ax.title.set_fontsize(9)
        twin.set_ylim(0, 1)
        twin.set_ylabel("val. top-1 (dashed)")
        ax.grid(alpha=0.3)
        if runs:
            ax.legend(fontsize=7, loc="center right")
    return png_data_uri(fig)


# ============ page ============


def _table(header: list[str] | None, rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header or [])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}" if isinstance(v, int | float) else "–"


def _img(uri: str, alt: str) -> str:
    return f"<img src='{uri}' alt='{html.escape(alt)}'>"


def accuracy_rows(results: list[dict]) -> list[list[str]]:
    """One row per scored evaluation: evaluation, model, train, test, top-1 %, top-5 %."""
    rows = []
    for r in results:
        if r["kind"] not in KIND_NAMES:
            continue
        name = KIND_NAMES[r["kind"]] + (f" ({r['protocol']})" if r.get("protocol") else "")
        rows.append(
            [
                name,
                MODEL_NAMES.get(r.get("model", ""), r.get("model", "")),
                r.get("train", ""),
                r.get("test", ""),
                _pct(r.get("top1")),
                _pct(r.get("top5")),
            ]
        )
    return rows


def lowshot_html(result: dict) -> str:
    budgets = result["budgets"]
    rows = []
    for row in result["rows"]:
        cells = [
            f"{100 * row['cells'][b]['top1_mean']:.2f} ± {100 * row['cells'][b]['top1_std']:.2f}"
            for b in budgets
        ]
        rows.append([row["name"], *cells])
    note = (
        f"<p>Top-1 (%) on {html.escape(result.get('test', ''))}, mean ± std over seeds {result['seeds']}; "
        f"protocol for the pretrained network: {html.escape(result['protocol'])}.</p>"
    )
    parts = [
        note,
        _table(["method", *[f"{b} of the labels" if b.endswith("%") else b for b in budgets]], rows),
    ]
    plots = [(row["name"], plot_lowshot_curves(row, budgets)) for row in result["rows"]]
    if any(uri for _, uri in plots):
        parts.append(
            "<h3>Training curves</h3><p>Loss on the training labels (mean since the previous logged step) and "
            "top-1 on the validation split carved from each labelled subset; a network trained again on the "
            "whole subset after the choice of learning rate shows the validation curve of its run at that "
            "rate.</p>"
        )
        parts += [_img(uri, f"training curves: {name}") for name, uri in plots if uri]
    notes = [
        f"{row['name']}, {b}, seed {r.get('seed')}: {'; '.join(why)}"
        for row in result["rows"]
        for b in budgets
        for r in row["cells"].get(b, {}).get("runs", [])
        if (why := not_flattened(r))
    ]
    if notes:
        parts.append(
            f"<p class='warn'>Runs not trained to a plateau: over the last {100 * CURVE_TAIL:.0f}% of the steps, "
            "or as many before the learning rate decays, the loss still falling by more than "
            f"{100 * LOSS_TOL:.0f}% or the validation top-1 rising by more than {100 * ACC_TOL:.0f} points; or "
            f"a loss still above {100 * STUCK:.0f}% of its first value. A longer budget or another learning "
            "rate may change these figures.</p>"
            + "<ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            + "</ul>"
        )
    return "".join(parts)


def _confusion_source(results: list[dict]) -> dict | None:
    """The most informative result with a confusion matrix: fine-tuned, then linear, then the probe at the end
    of pretraining."""

    def rank(r: dict) -> tuple[int, int]:
        order = {"finetune": 0, "linear": 1}
        return (r.get("protocol") == "end of pretraining", order.get(r["kind"], 2))

    candidates = [r for r in results if r.get("confusion") and r.get("model") == "pretrained"]
    return min(candidates, key=rank) if candidates else None


def summary_html(result: dict) -> str:
    """The clusters of ``openseer clusters`` (its clusters.json) in one paragraph: how many images over how many prototypes, how many used and empty."""
    return (
        f"<p>{result['n_images']} images of {html.escape(result['data'])} over {result['prototypes']} "
        f"prototypes: {result['used']} used, {result['empty']} empty. Each image goes to the prototype that "
        "scores it highest; each grid shows the images of one of the largest groups, most confident first.</p>"
    )


def figures_html(result: dict, source: Callable[[dict], str | None]) -> str:
    """The grids of ``result`` as HTML figures with captions; ``source(entry)`` gives each grid's image
    address (a file next to the page, or a data URI), None to leave that grid out."""
    parts = []
    for c in result["clusters"]:
        src = source(c)
        if src is None:
            continue
        caption = f"#{c['rank']}: prototype {c['prototype']}, {c['size']} images"
        if "majority_label" in c:
            caption += f", {100 * c['majority_share']:.0f}% {c['majority_label']}"
        parts.append(
            f"<figure><img src='{html.escape(src)}' alt='cluster {c['prototype']}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return "".join(parts)


def _cluster_png(run_dir: Path, entry: dict) -> str | None:
    path = Path(entry["png"])
    for candidate in (path, run_dir / "eval" / "clusters" / path.name):
        uri = file_data_uri(candidate)
        if uri:
            return uri
    return None


@dataclass
class ReportConfig:
    """The typed config of ``openseer report``: the arguments of :func:`build_report`."""

    run_dir: str = ""
    """A pretraining run folder."""
    out: str | None = None
    """Output file; null: RUN_DIR/report.html."""

    def validate(self) -> None:
        if not self.run_dir:
            raise ConfigError("report needs a run folder (run_dir=RUN)")


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``RUN/report.html`` (or ``out``) and return its path."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        from openseer.data.folders import DataError

        raise DataError(f"run folder does not exist: {run_dir}")
    config = {}
    if (run_dir / "config.yaml").exists():
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    summary = (
        json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    )
    records = read_metrics(run_dir / "metrics.jsonl")
    results = read_results(run_dir / "eval")

    sections = []
    facts = []
    if config:
        m, d = config.get("model", {}), config.get("data", {})
        facts += [
            ["architecture", f"{m.get('arch')} ({m.get('stem')} stem)"],
            ["data", d.get("source", "")],
            ["prototypes", m.get("prototypes", "")],
        ]
    for key in ("steps", "images_seen", "final_loss", "skipped_images", "nonfinite_steps"):
        if key in summary:
            v = summary[key]
            facts.append([key.replace("_", " "), f"{v:.4f}" if isinstance(v, float) else v])
    if "train_seconds" in summary:
        facts.append(["training time", f"{summary['train_seconds'] / 60:.1f} min"])
    if facts:
        sections.append("<h2>Run</h2>" + _table(None, facts))
    if records:
        sections.append("<h2>Training</h2>" + _img(plot_training(records), "loss and learning rate"))
        if any("protos_used" in r for r in records):
            sections.append(_img(plot_usage(records), "cluster usage"))
    acc = accuracy_rows(results)
    if acc:
        sections.append(
            "<h2>Accuracy</h2>" + _table(["evaluation", "model", "train", "test", "top-1 %", "top-5 %"], acc)
        )
    for r in results:
        if r["kind"] == "lowshot":
            sections.append("<h2>Low-shot</h2>" + lowshot_html(r))
    conf = _confusion_source(results)
    if conf:
        title = f"{KIND_NAMES.get(conf['kind'], conf['kind'])} on {conf.get('test', '')}"
        sections.append(
            "<h2>Confusion matrix</h2>"
            + _img(plot_confusion(conf["confusion"], conf["classes"], title), "confusion matrix")
        )
    for r in results:
        if r["kind"] == "clusters":  # the gallery of `openseer clusters`, its grids embedded in the page
            sections.append(
                "<h2>Clusters</h2><p>What the network learned to group in these images: the groups its SwAV "
                "prototypes make of them.</p>"
                + summary_html(r)
                + _img(plot_cluster_sizes(r["sizes"]), "cluster sizes")
                + f"<div class='gallery'>{figures_html(r, lambda c: _cluster_png(run_dir, c))}</div>"
            )
    if not sections:
        sections.append(
            "<p>Nothing to report yet: no metrics.jsonl, summary.json or eval/*.json in this folder.</p>"
        )

    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>openseer report: {html.escape(run_dir.name)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1150px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "th{background:#f2f2f2}img{max-width:100%}figure{display:inline-block;margin:.5em;vertical-align:top}"
        "figcaption{font-size:.85em;max-width:420px}.warn{color:#a33}"
        "</style></head><body>"
        f"<h1>openseer report: {html.escape(run_dir.name)}</h1><p><code>{html.escape(str(run_dir.resolve()))}</code></p>"
        + "\n".join(sections)
        + "</body></html>"
    )
    target = Path(out) if out else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, page)
    return target
