"""The one evaluation at the end of pretraining: kNN of the network the run started from and after training, a
linear probe.

Run once per run, by ``openseer pretrain`` and :func:`openseer.pretrain` after training (the training loop only
trains and saves), on the run's own labelled split, the one pretraining recorded in ``RUN/holdout.json``: the
labelled training part is the kNN bank and the probe's training set, the held-out part (never trained on) is
scored. Both networks are scored the same way (:func:`knn_on_split`): BatchNorm statistics re-estimated on
un-augmented training images (``run.knn_bn_recalibrate``), then weighted cosine kNN (``run.knn_k``,
``run.knn_temperature``). The network the run started from is its random initialisation (drawn with
``run.seed``), or, for a run started from a weights file (``model.init``), that file's network as it stands,
scored as ``openseer knn FILE`` scores it over the same split (its own preprocessing; BatchNorm re-estimated as
``run.knn_bn_recalibrate`` says, like the trained network's): the "initial weights" row. Results
go to ``RUN/eval/pretraining-*.json`` (the report reads them) and are returned. Labelled or not, the images
trained on are then grouped by the run's prototypes, as ``openseer clusters RUN`` groups them
(``RUN/eval/clusters.json`` and its grids), for the report's gallery.

The network comes from the run's newest checkpoint (:func:`openseer.weights.load_weights`); the data and these
settings from the run's own config (:func:`run_config`), which the weights do not carry.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from openseer.config import load_config
from openseer.data.labelled import EvalData
from openseer.eval.clusters import ClustersConfig, run_clusters
from openseer.eval.embed import Embedder, FeatureConfig, Features
from openseer.eval.knn import knn_of_features
from openseer.eval.linear import ProbeConfig, fit_linear_probe, score_head
from openseer.eval.metrics import write_result
from openseer.eval.report import build_report
from openseer.eval.split import pretraining_split
from openseer.fileio.checkpoint import CheckpointError
from openseer.train.config import PretrainConfig
from openseer.train.data import pretraining_data
from openseer.weights import Weights, load_weights

log = logging.getLogger(__name__)

PROTOCOL = "end of pretraining"
CONFIG_FILE = "config.yaml"  # the resolved config a pretraining run writes into its folder as it starts


def run_config(run_dir: str | Path) -> PretrainConfig:
    """The pretraining config of the run in ``run_dir`` (``RUN/config.yaml``, as the run last started with it):
    its data and its ``run.*`` settings, which are the run's, not the network's."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a pretraining run folder: it has no {CONFIG_FILE}")
    return load_config(PretrainConfig, [path])


START_NAMES = {"random": "at random initialisation", "initial": "with the initial weights (model.init)"}
"""How the log names the network a run started from."""

REPORT_CLUSTER_IMAGES = 2000
"""Training images (a seeded sample of larger sets) whose prototype clusters the run's report shows."""


def knn_on_split(
    embedder: Embedder, bank: EvalData, test: EvalData, cfg: PretrainConfig, recalibrate: bool
) -> tuple[Features, Features, float, float]:
    """How the end of pretraining scores a network: BatchNorm statistics re-estimated on the bank first when
    ``recalibrate``, then the weighted cosine kNN of ``test`` against ``bank`` with the run's ``run.knn_k`` and
    ``run.knn_temperature``. Returns (bank features, test features, top-1, top-5)."""
    if recalibrate:
        embedder.calibrate(bank)
    bank_f, test_f = embedder(bank), embedder(test)
    return bank_f, test_f, *knn_of_features(bank_f, test_f, cfg.run.knn_k, cfg.run.knn_temperature)


def evaluate_pretraining(
    run_dir: str | Path, device: str = "auto", progress: bool = False, probe: ProbeConfig | None = None
) -> dict:
    """Score the newest checkpoint of ``run_dir`` (and the network it started from) on the held-out split the
    run recorded (``RUN/holdout.json``), its images read as pretraining read them (through the decoded-image
    cache when the run used one); then build the run's report.

    Returns {'knn_top1', 'knn_top5', 'knn_top1_random', 'knn_top5_random', 'linear_top1', 'linear_top5',
    'linear_lr', 'n_bank', 'n_test', 'test_name', 'start', 'seconds', 'report'}; only 'seconds' and 'report'
    when the data has no labels. 'start' is 'random', or 'initial' for a run started from ``model.init``, whose
    scores are then 'knn_top1_initial' and 'knn_top5_initial' instead of the '_random' ones.
    """
    started = time.perf_counter()
    weights = load_weights(run_dir)
    run_dir = weights.run_dir
    cfg = run_config(run_dir)
    record = pretraining_split(weights)
    out: dict = {}
    if record is None:
        log.info("%s records no held-out split: nothing to score", run_dir)
    else:
        data = pretraining_data(record.split(), cfg.data, progress)
        bank, test = data.bank, data.test
        if bank is not None and test is not None and len(test):
            out = _score(weights, bank, test, cfg, device, progress, probe or ProbeConfig(epochs=30))
            _write(run_dir, bank, out, cfg)
            start = out["start"]
            log.info(
                "held-out kNN top-1: %.4f after pretraining, %.4f %s; linear probe %.4f",
                out["knn_top1"], out[f"knn_top1_{start}"], START_NAMES[start], out["linear_top1"],
            )  # fmt: skip
        # what the prototypes make of the images trained on, labelled or not: the report's cluster gallery
        features = FeatureConfig(
            device=device, workers=cfg.data.workers, progress=progress, bn_recalibrate=False
        )
        clusters = ClustersConfig(
            str(run_dir), max_images=REPORT_CLUSTER_IMAGES, features=features, max_minutes=None
        )
        run_clusters(clusters, weights, data.training_set(record.source))
    out["report"] = str(build_report(run_dir))
    out["seconds"] = time.perf_counter() - started
    return out


def _score(
    weights: Weights,
    bank: EvalData,
    test: EvalData,
    cfg: PretrainConfig,
    device: str,
    progress: bool,
    probe: ProbeConfig,
) -> dict:
    features = FeatureConfig(device=device, workers=cfg.data.workers, progress=progress)
    out: dict = {"start": "random" if cfg.model.init is None else "initial"}
    for start in (out["start"], "trained"):
        if start == "initial":  # the file as openseer knn FILE reads it: its network and preprocessing
            initial = load_weights(str(cfg.model.init))
            embedder = Embedder.from_weights(initial, features)
        else:
            embedder = Embedder.from_weights(
                weights, features, random_init=start == "random", seed=cfg.run.seed
            )
        recalibrate = cfg.run.knn_bn_recalibrate or start == "random"
        bank_f, test_f, top1, top5 = knn_on_split(embedder, bank, test, cfg, recalibrate)
        suffix = "" if start == "trained" else f"_{start}"
        out[f"knn_top1{suffix}"], out[f"knn_top5{suffix}"] = top1, top5
    # the probe on the trained network's features (bank_f, test_f of the last pass)
    fit = fit_linear_probe(bank_f.features, bank_f.labels, len(bank.classes), probe)
    lin1, lin5, confusion = score_head(fit.head, test_f.features, test_f.labels, len(bank.classes))
    out.update(
        linear_top1=lin1,
        linear_top5=lin5,
        linear_lr=fit.lr,
        confusion=confusion.tolist(),
        n_bank=len(bank_f.index),
        n_test=len(test_f.index),
        test_name=test.name,
    )
    return out


def _write(run_dir: Path, bank: EvalData, out: dict, cfg: PretrainConfig) -> None:
    common = {
        "protocol": PROTOCOL,
        "train": bank.name,
        "test": out["test_name"],
        "n_train": out["n_bank"],
        "n_test": out["n_test"],
    }
    knn = {"kind": "knn", "k": cfg.run.knn_k, "temperature": cfg.run.knn_temperature, **common}
    folder = run_dir / "eval"
    write_result(
        folder,
        "pretraining-knn",
        {**knn, "model": "pretrained", "top1": out["knn_top1"], "top5": out["knn_top5"]},
    )
    start = out["start"]
    write_result(
        folder,
        f"pretraining-knn-{start}",
        {**knn, "model": start, "top1": out[f"knn_top1_{start}"], "top5": out[f"knn_top5_{start}"]},
    )
    write_result(
        folder,
        "pretraining-linear",
        {
            "kind": "linear",
            "model": "pretrained",
            **common,
            "top1": out["linear_top1"],
            "top5": out["linear_top5"],
            "lr": out["linear_lr"],
            "classes": bank.classes,
            "confusion": out.pop("confusion"),
        },
    )
