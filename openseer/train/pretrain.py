"""SwAV pretraining, top to bottom (Caron et al. 2020; SEER, Goyal et al. 2021).

:func:`setup` builds the run: data (and the config's ``auto`` values sized for it, :mod:`openseer.train.sizing`)
-> model and its fast paths -> optimiser, loss and queue -> resume -> schedule.
:func:`train` is the loop: one :func:`~openseer.train.step.train_step` per batch (multi-crop forward, codes with
the queue, swapped prediction, backward, prototype freezing, non-finite check, optimiser step), then logging and
checkpoints, then the final checkpoint. Scoring the features is the caller's (``openseer.eval.pretraining``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from openseer import distributed
from openseer.config import ConfigError, dump_yaml, load_config, to_dict
from openseer.data.images import SkipLog
from openseer.data.progressive import progressive_side, resize_crops
from openseer.data.shards import ShardBatches
from openseer.fileio.atomic import atomic_write_text
from openseer.fileio.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from openseer.models import SwAVModel
from openseer.optim import cosine_schedule, warmup_length
from openseer.swav import EmbeddingQueue, cluster_health
from openseer.train.autotune import Decision, choose_fast_paths, record_first_compile
from openseer.train.config import PretrainConfig
from openseer.train.data import BatchStream, LoaderBatches, PretrainData, TensorBatches, prepare_data
from openseer.train.initial import Initial, load_initial_, read_initial
from openseer.train.monitor import CollapseMonitor, MetricsWriter, ProgressBar
from openseer.train.parallel import build_for_strategy, parallelize
from openseer.train.queue_checkpoint import gather_queues, restore_queue
from openseer.train.sharded_checkpoint import latest_sharded, load_sharded, save_sharded
from openseer.train.sizing import size_run
from openseer.train.step import StepOutput, StepParts, learning_rates, step_parts, train_step

log = logging.getLogger(__name__)

BUDGET_GRID = 10_000  # resolution of the schedules over a wall-clock budget
SKIPPED_FILE = "skipped_images.json"  # in the run folder: [{path, reason}] of every unreadable image


@dataclass
class PretrainResult:
    out_dir: Path
    steps: int
    images_seen: int
    train_seconds: float
    final_loss: float
    skipped_images: int = 0
    nonfinite_steps: int = 0
    first_step_seconds: float | None = None
    """The first step this process ran, in seconds (a compilation left to it is in there, and in the budget)."""
    data_wait_share: float = 0.0
    """Share of ``train_seconds`` this process spent waiting for its next batch (decoding, cropping, reading
    shards): near 0 when the input keeps up with the steps."""
    evaluation: dict | None = None
    """Filled by the caller that scores the run (openseer.eval.pretraining), not by the loop."""


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the message says what to change and where to resume from."""


@dataclass
class Progress:
    """Where the run stands: saved in every checkpoint, under these names, and restored by a resume."""

    step: int = 0
    """Batch positions done (steps skipped for unreadable batches or non-finite values included)."""
    images_seen: int = 0
    train_seconds: float = 0.0
    """Seconds spent in steps: not in checkpoint I/O, nor in choosing the fast paths."""
    nonfinite: int = 0
    data_seconds: float = 0.0
    """The part of ``train_seconds`` spent waiting for the next batch."""


@dataclass
class Schedule:
    """The learning rate and, with ``swav.temperature_start``, the softmax temperature: arrays computed once
    (swav main_swav.py), indexed by step or, under a wall-clock budget, by the share of the budget spent, so that
    they end exactly when the budget does, whatever the speed of the machine (and of its neighbours)."""

    lr: torch.Tensor
    temperature: torch.Tensor | None
    warmup: int
    """Cells of ``lr`` in the warm-up."""
    budget_s: float = math.inf

    @property
    def budgeted(self) -> bool:
        return math.isfinite(self.budget_s)

    def share(self, progress: Progress) -> float:
        """The share of the run done: of the budget's seconds, or of the schedule's steps."""
        return progress.train_seconds / self.budget_s if self.budgeted else progress.step / len(self.lr)

    def lr_at(self, progress: Progress) -> float:
        return self._at(self.lr, progress)

    def temperature_at(self, progress: Progress) -> float | None:
        """None: no schedule, the configured temperature."""
        return None if self.temperature is None else self._at(self.temperature, progress)

    def _at(self, values: torch.Tensor, progress: Progress) -> float:
        if self.budgeted:
            return float(values[min(int(self.share(progress) * len(values)), len(values) - 1)])
        return float(values[progress.step])


def make_schedule(cfg: PretrainConfig, steps_per_epoch: int, length: int, budget_s: float) -> Schedule:
    """``length`` cells (one per step, or :data:`BUDGET_GRID` cells of a budget of ``budget_s`` seconds): linear
    warm-up then cosine for the learning rate; a cosine without warm-up for the temperature."""
    o = cfg.optim
    planned = o.planned_steps(steps_per_epoch)  # the run the config describes, in which the warm-up is given
    warmup = warmup_length(
        length, planned, o.warmup_fraction, o.warmup_steps, o.warmup_epochs, steps_per_epoch
    )
    start, peak, final = learning_rates(o, distributed.world_size())
    t_start = cfg.swav.temperature_start
    temperature = None if t_start is None else cosine_schedule(t_start, cfg.swav.temperature, length)
    lr = cosine_schedule(peak, final, length, warmup, start=start, shape=o.schedule_shape)
    return Schedule(lr, temperature, warmup, budget_s)


@dataclass
class Run:
    """What :func:`setup` builds and :func:`train` trains."""

    cfg: PretrainConfig
    device: torch.device
    data: PretrainData
    batches: BatchStream
    model: SwAVModel
    parts: StepParts
    queue: EmbeddingQueue
    decision: Decision
    schedule: Schedule
    progress: Progress
    resumed: bool
    saved_step: int | None = None
    """The step of the last checkpoint this run wrote or resumed from (the final save skips a step saved)."""

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.run.out_dir)

    @property
    def ckpt_dir(self) -> Path:
        return _checkpoint_dir(self.cfg)

    @property
    def sharded(self) -> bool:
        return _sharded(self.cfg)


def _checkpoint_dir(cfg: PretrainConfig) -> Path:
    return Path(cfg.run.out_dir) / "checkpoints"


def _sharded(cfg: PretrainConfig) -> bool:
    """Checkpoints written shard by shard (torch.distributed.checkpoint): under FSDP."""
    return cfg.parallel.strategy == "fsdp"


def pretrain(cfg: PretrainConfig, resume: bool = False) -> PretrainResult:
    """Pretrain as ``cfg`` says; ``resume``: go on from the run folder's last checkpoint."""
    return train(setup(cfg, resume))


# ============ setup ============


def setup(cfg: PretrainConfig, resume: bool = False) -> Run:
    """The run as main_swav.py builds it: data, model, optimiser and loss with its queue, resume, schedule. The
    run's config (``Run.cfg``, RUN/config.yaml, the checkpoints) is ``cfg`` with its ``auto`` values sized for
    the data."""
    device = distributed.resolve_device(cfg.run.device)
    distributed.init_from_env(device, cfg.run.dist_timeout_s)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    out_dir = Path(cfg.run.out_dir)
    started = _started_config(out_dir) if resume else None  # what a resumed run sized when it started
    cfg, initial = _initial_weights(cfg, resume, started)
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.run.seed)

    # ============ data ============
    data = prepare_data(cfg.data, cfg.run.seed, cfg.run.progress and distributed.is_main(), run_dir=out_dir)
    log.info("data: %s", data.description)
    # the 'auto' values (batch, epochs, prototypes, queue) sized for these images; the run saves the numbers
    sized = size_run(cfg, len(data), distributed.world_size(), started)
    cfg = sized.cfg
    if distributed.is_main():
        for reason in sized.reasons:
            log.info("sized from the data: %s", reason)
        dump_yaml(cfg, out_dir / "config.yaml")
    batches = batch_stream(cfg, data, device)
    steps_per_epoch = batches.steps_per_epoch

    # ============ model ============
    model, train_model = _build_model(cfg, device, initial)
    # run.precision and run.compile; 'auto' ones are chosen by timing a few of the run's steps on its first batch
    fast = choose_fast_paths(cfg, model, train_model, batches, device, out_dir, resume=resume)

    # ============ optimiser, loss and queue ============
    # main_swav's sizing: rounded down to whole global batches, then split over the processes
    local_queue = cfg.swav.local_queue_length(cfg.optim.batch_size, distributed.world_size())
    queue = EmbeddingQueue(len(cfg.swav.crops_for_assign), local_queue, cfg.model.out_dim, device)
    queue_start = math.ceil(cfg.swav.queue_start_epoch * steps_per_epoch)
    parts = step_parts(cfg, model, fast.forward, fast.decision.precision, device, queue, queue_start)

    # ============ resume, schedule ============
    budget_s = _training_budget(cfg, fast.decision)
    progress = Progress()
    length = BUDGET_GRID if math.isfinite(budget_s) else cfg.optim.planned_steps(steps_per_epoch)
    restored = _resume(cfg, device, parts, queue) if resume else None
    if restored is not None:
        progress, length = restored
    schedule = make_schedule(cfg, steps_per_epoch, length, budget_s)
    saved = progress.step if restored is not None else None
    return Run(
        cfg, device, data, batches, model, parts, queue, fast.decision, schedule, progress, resume, saved
    )


def _started_config(out_dir: Path) -> PretrainConfig | None:
    """The config a run folder's run saved when it started (its 'auto' values sized), None when it has none
    that reads."""
    path = out_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(PretrainConfig, [path])
    except ConfigError as err:
        log.warning("--resume: ignoring %s (%s); 'auto' values are sized again", path, err)
        return None


def batch_stream(cfg: PretrainConfig, data: PretrainData, device: torch.device) -> BatchStream:
    """This process's multi-crop batches: augmented on decoded tensors, or decoded per image from tar shards or
    files in loader workers."""
    kwargs = dict(
        batch_size=cfg.optim.batch_size,
        crops=cfg.crops,
        aug=cfg.augment,
        seed=cfg.run.seed,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
        device=device,
        channels_last=cfg.model.channels_last,
    )
    if data.train_images is not None:
        return TensorBatches(data.train_images, **kwargs)
    if data.train_shards is not None:
        return ShardBatches(
            data.train_shards, workers=cfg.data.workers, max_pixels=cfg.data.max_pixels, **kwargs
        )
    return LoaderBatches(data.train_paths, workers=cfg.data.workers, max_pixels=cfg.data.max_pixels, **kwargs)


def _initial_weights(
    cfg: PretrainConfig, resume: bool, started: PretrainConfig | None
) -> tuple[PretrainConfig, Initial | None]:
    """The weights file the run starts from (``model.init``, read, with ``model.arch: auto`` resolved in the
    config), or None: no ``model.init``, or ``--resume`` with a checkpoint to go on from, which wins (the
    checkpoint holds the run's own weights, optimiser and schedule; the file is then not read)."""
    if cfg.model.init is None:
        return cfg, None
    ckpt_dir = _checkpoint_dir(cfg)
    found = (latest_sharded(ckpt_dir) if _sharded(cfg) else latest_checkpoint(ckpt_dir)) if resume else None
    if found is None:
        if resume:
            log.info("--resume: no checkpoint in %s yet, so the run starts from model.init", ckpt_dir)
        return read_initial(cfg)
    log.info("--resume wins over model.init: going on from %s; %s is not loaded", found, cfg.model.init)
    if cfg.model.arch == "auto":  # the architecture the run took from the file when it started
        if started is None or started.model.arch == "auto":
            raise ConfigError(
                f"config key 'model.arch': 'auto' on --resume needs the architecture the run recorded in "
                f"{Path(cfg.run.out_dir) / 'config.yaml'}; name it (model.arch=...)"
            )
        cfg = replace(cfg, model=replace(cfg.model, arch=started.model.arch, stem=started.model.stem))
    return cfg, None


def _build_model(
    cfg: PretrainConfig, device: torch.device, initial: Initial | None = None
) -> tuple[SwAVModel, torch.nn.Module]:
    """The model the run starts from, and what the loop calls: the model itself, its DDP wrapper, or (FSDP) the
    model sharded in place, its parameters then DTensor shards. With ``initial``, its weights are loaded into
    the model before DDP wraps it (under FSDP, into this process's shards)."""
    # whole on this device, or under FSDP built on the meta device and materialised shard by shard
    model = build_for_strategy(cfg, device)
    if initial is not None:
        said = load_initial_(model, initial)
        if distributed.is_main():
            log.info(said)
    return model, parallelize(model, cfg.parallel, device, cfg.run.precision)


def _training_budget(cfg: PretrainConfig, decision: Decision) -> float:
    """Seconds of steps a run bounded by ``run.budget_minutes`` may spend (inf: bounded by steps). Choosing the
    fast paths (trial steps, and a compile when one is tried) is part of the run's time: it comes out of the
    budget, as a compile at the first step does."""
    if cfg.run.budget_minutes is None:
        return math.inf
    budget_s = cfg.run.budget_minutes * 60
    if decision.autotune_s > 0:
        budget_s = max(budget_s - decision.autotune_s, 0.0)
        log.info("budget: %.0f s of training after %.1f s choosing fast paths", budget_s, decision.autotune_s)
    return budget_s


def _resume(
    cfg: PretrainConfig, device: torch.device, parts: StepParts, queue: EmbeddingQueue
) -> tuple[Progress, int] | None:
    """Restores the run folder's last checkpoint into the model, optimiser, queue, loss scaler and RNG; returns
    the progress and the schedule's length it recorded (None, with a warning, when there is none)."""
    ckpt_dir, sharded = _checkpoint_dir(cfg), _sharded(cfg)
    path = latest_sharded(ckpt_dir) if sharded else latest_checkpoint(ckpt_dir)
    if path is None:
        log.warning("--resume: no usable checkpoint in %s, starting at step 0", ckpt_dir)
        return None
    if sharded:  # loaded in place and resharded to this number of processes
        state = load_sharded(path, parts.model, parts.optimizer, queue)
    else:
        state = load_checkpoint(path, map_location=device)
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        restore_queue(queue, state["queue"])  # this process's own queue
    parts.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"].cpu())
    if device.type == "cuda" and state.get("rng_cuda"):
        torch.cuda.set_rng_state_all([t.cpu() for t in state["rng_cuda"]])
    progress = Progress(
        state["step"],
        state["images_seen"],
        state["train_seconds"],
        state.get("nonfinite", 0),
        state.get("data_seconds", 0.0),  # absent from checkpoints written before it was recorded
    )
    log.info("resumed from %s at step %d of %d", path, progress.step, state["total_steps"])
    return progress, state["total_steps"]


# ============ training loop ============


def train(run: Run) -> PretrainResult:
    """Steps from the run's progress on, until the schedule, ``run.max_steps`` or the time budget ends."""
    cfg, progress, schedule = run.cfg, run.progress, run.schedule
    last_step = math.inf if schedule.budgeted else len(schedule.lr)
    stop_at = min(last_step, cfg.run.max_steps if cfg.run.max_steps is not None else math.inf)
    first_step_s, bad_streak = None, 0
    clock = time.perf_counter()
    reports = _Reports(run, clock)
    positions = _batch_positions(run, progress.step)
    try:
        while progress.step < stop_at and progress.train_seconds < schedule.budget_s:
            waited = time.perf_counter()
            crops = next(positions)
            waited = time.perf_counter() - waited
            # a batch of only unreadable files (counted in batches.skipped) is a step skipped by every process;
            # like any step it uses up one batch position (the streams' contract, openseer.train.data.BatchStream)
            if distributed.any_process(not crops, run.device):
                progress.step += 1
                if progress.step % cfg.run.checkpoint_every == 0:  # the checkpoint due now is still written
                    _save(run)
                continue
            if cfg.progressive.start_scale < 1.0:  # smaller crops early on (openseer.data.progressive)
                crops = _progressive_crops(cfg, crops, schedule.share(progress))
            lr, temperature = schedule.lr_at(progress), schedule.temperature_at(progress)

            out = train_step(run.parts, crops, progress.step, lr, temperature)

            if not out.applied:
                progress.nonfinite, bad_streak = progress.nonfinite + 1, bad_streak + 1
                log.warning(
                    "step %d: non-finite loss or gradient, step skipped (%d so far)",
                    progress.step,
                    progress.nonfinite,
                )
                if bad_streak >= cfg.run.max_nonfinite_steps:
                    raise TrainingDiverged(_divergence_message(progress.step, bad_streak, cfg, run.ckpt_dir))
                progress.step += 1
                continue
            bad_streak = 0
            images = crops[0].shape[0] * distributed.world_size()
            progress.step += 1
            progress.images_seen += images
            now = time.perf_counter()
            if first_step_s is None:  # with a compilation left to the first step (autotune's cached choice)
                first_step_s = now - clock
                if distributed.is_main():  # what that compilation cost, for the next run's choice
                    record_first_compile(cfg, run.device, run.decision, first_step_s)
            progress.train_seconds += now - clock
            progress.data_seconds += waited
            clock = now

            # ============ logging and checkpoints ============
            reports.step(
                progress, out, crops, lr, temperature, images, waited, now, last=progress.step == last_step
            )
            if progress.step % cfg.run.checkpoint_every == 0:
                _save(run)
                clock = time.perf_counter()  # checkpoint I/O is not training time
    finally:
        positions.close()  # stops a prefetching thread
    return _finish(run, reports, first_step_s)


def _batch_positions(run: Run, step: int) -> Iterator[list[torch.Tensor]]:
    """The run's batches from batch position ``step`` on, epoch after epoch (a resumed run starts mid-epoch)."""
    epoch, start = divmod(step, run.batches.steps_per_epoch)
    while True:
        batches = run.batches.epoch(epoch, start=start)
        try:
            yield from batches
        finally:
            batches.close()
        if len(run.batches.skipped) and distributed.is_main():
            log.warning("epoch %d: %s", epoch, run.batches.skipped.summary())
        epoch, start = epoch + 1, 0


def _progressive_crops(cfg: PretrainConfig, crops: list[torch.Tensor], share: float) -> list[torch.Tensor]:
    p = cfg.progressive
    sides = [progressive_side(c.shape[-1], share, p.start_scale, p.until, p.multiple) for c in crops]
    return resize_crops(crops, sides)


def _divergence_message(step: int, streak: int, cfg: PretrainConfig, ckpt_dir: Path) -> str:
    last = latest_checkpoint(ckpt_dir)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return (
        f"training diverged: {streak} steps in a row up to step {step} had a non-finite loss or gradient. "
        f"Likely causes: a learning rate too high (optim.base_lr={cfg.optim.base_lr}), a Sinkhorn epsilon too "
        f"small (swav.epsilon={cfg.swav.epsilon}), fp16 overflow (run.precision={cfg.run.precision}; try bf16 "
        f"or fp32). {where}; lower the lr and rerun with --resume."
    )


class _Reports:
    """What the loop reports as it goes: metrics (metrics.jsonl, TensorBoard) every ``run.log_every`` steps and at
    the last, collapse warnings, the progress bar; the main process writes them."""

    def __init__(self, run: Run, now: float) -> None:
        cfg, schedule, main = run.cfg, run.schedule, distributed.is_main()
        self.log_every, self.steps_per_epoch = cfg.run.log_every, run.batches.steps_per_epoch
        self.writer = MetricsWriter(run.out_dir, cfg.run.tensorboard) if main else None
        grace = max(0 if schedule.budgeted else schedule.warmup, cfg.swav.freeze_prototypes_iters) + 100
        self.monitor = CollapseMonitor(cfg.model.prototypes, grace=grace)
        self.bar = None
        if cfg.run.progress and main:
            budget_s = schedule.budget_s if schedule.budgeted else None
            self.bar = ProgressBar(len(schedule.lr), run.progress.step, budget_s, run.progress.train_seconds)
        self.window_start, self.window_images, self.window_wait = now, 0, 0.0
        self.loss = float("nan")
        """The last applied step's loss."""

    def step(
        self,
        progress: Progress,
        out: StepOutput,
        crops: list[torch.Tensor],
        lr: float,
        temperature: float | None,
        images: int,
        waited: float,
        now: float,
        last: bool,
    ) -> None:
        self.loss = loss = float(out.loss)
        self.window_images += images
        self.window_wait += waited
        if progress.step % self.log_every == 0 or last:
            health = cluster_health(out.codes[0])
            with torch.no_grad():  # mean cosine between embeddings of the batch: -> 1 when features collapse
                z0 = out.z[: crops[0].shape[0]].float()
                health["embedding_similarity"] = float((z0 @ z0.t()).mean())
            window = max(now - self.window_start, 1e-9)
            rate, wait_share = self.window_images / window, min(self.window_wait / window, 1.0)
            self.window_start, self.window_images, self.window_wait = now, 0, 0.0
            metrics = {
                "loss": loss,
                "lr": lr,
                "imgs_per_s": rate,
                "data_wait_share": wait_share,
                "crop_side": crops[0].shape[-1],
                "epoch": progress.step / self.steps_per_epoch,
                **health,
            }
            if temperature is not None:
                metrics["temperature"] = temperature
            if self.writer is not None:
                self.writer.write(progress.step, metrics)
            warning = self.monitor.update(progress.step, loss, health["usage_entropy"])
            if warning and distributed.is_main():
                log.warning(warning)
        if self.bar is not None:
            rate = progress.images_seen / max(progress.train_seconds, 1e-9)
            self.bar.update(progress.step, progress.train_seconds, loss, rate, lr)


# ============ checkpoints and the end of the run ============


def _save(run: Run) -> None:
    """A checkpoint of the run at its current step. A collective: every process calls it."""
    run.saved_step = run.progress.step
    # every process's queue, each to be given back to its process (a collective: before the others return)
    queues = None if run.sharded else gather_queues(run.queue)
    if not run.sharded and not distributed.is_main():
        return
    p = run.progress
    state = {
        "scaler": run.parts.scaler.state_dict(),
        "step": p.step,
        "total_steps": len(run.schedule.lr),
        "images_seen": p.images_seen,
        "train_seconds": p.train_seconds,
        "nonfinite": p.nonfinite,
        "data_seconds": p.data_seconds,
        "config": to_dict(run.cfg),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else [],
    }
    keep = run.cfg.run.keep_checkpoints
    if run.sharded:  # every process writes its own shards
        save_sharded(run.ckpt_dir, p.step, run.model, run.parts.optimizer, run.queue, state, keep=keep)
        return
    state.update(model=run.model.state_dict(), optimizer=run.parts.optimizer.state_dict(), queue=queues)
    save_checkpoint(state, run.ckpt_dir, p.step, keep=keep)


def _skipped_files(summary: Path, resume: bool, *logs: SkipLog) -> SkipLog:
    """Every unreadable file of the run once, with its reason: those of ``logs`` plus, when resuming, those the
    earlier part of the run recorded in ``summary``."""
    skipped = SkipLog.read_json(summary) if resume else SkipLog()
    for found in logs:
        skipped.extend(found)
    return skipped.distinct()


def _finish(run: Run, reports: _Reports, first_step_s: float | None) -> PretrainResult:
    """The final checkpoint, the unreadable files, the run's summary (summary.json, the last metrics line)."""
    if reports.bar is not None:
        reports.bar.close()
    if run.saved_step != run.progress.step:  # the last step's checkpoint may just have been written
        _save(run)
    skipped = _skipped_files(run.out_dir / SKIPPED_FILE, run.resumed, run.data.skipped, run.batches.skipped)
    if distributed.is_main():
        skipped.write_json(run.out_dir / SKIPPED_FILE)
        if len(skipped):
            log.warning("%s\n(all of them in %s)", skipped.summary(), run.out_dir / SKIPPED_FILE)
    p = run.progress
    result = PretrainResult(
        out_dir=run.out_dir,
        steps=p.step,
        images_seen=p.images_seen,
        train_seconds=p.train_seconds,
        final_loss=reports.loss,
        skipped_images=len(skipped),
        nonfinite_steps=p.nonfinite,
        first_step_seconds=first_step_s,
        data_wait_share=p.data_seconds / p.train_seconds if p.train_seconds > 0 else 0.0,
    )
    if reports.writer is not None:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()}
        summary.update(run.decision.summary())  # precision and compile as used, and why (autotune.json: all)
        reports.writer.write(
            p.step, {f"final/{k}": v for k, v in summary.items() if isinstance(v, int | float)}
        )
        atomic_write_text(run.out_dir / "summary.json", json.dumps(summary, indent=2))
        reports.writer.close()
    return result
