"""SwAV pretraining, top to bottom (Caron et al. 2020; SEER, Goyal et al. 2021).

data -> model -> optimiser and schedule -> resume -> loop(multi-crop, codes, swapped prediction, step)
-> final checkpoint. Scoring the features is the caller's (``openseer.eval.pretraining``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from openseer import distributed
from openseer.config import dump_yaml, to_dict
from openseer.data.images import SkipLog
from openseer.data.multicrop import n_crops
from openseer.data.progressive import progressive_side, resize_crops
from openseer.data.shards import ShardBatches
from openseer.fileio.atomic import atomic_write_text
from openseer.fileio.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from openseer.models import SwAVModel
from openseer.optim import cosine_schedule, warmup_length
from openseer.swav import EmbeddingQueue, cluster_health, swav_objective
from openseer.train.autotune import choose_fast_paths, record_first_compile
from openseer.train.config import PretrainConfig
from openseer.train.data import LoaderBatches, TensorBatches, prepare_data
from openseer.train.monitor import CollapseMonitor, MetricsWriter, ProgressBar
from openseer.train.parallel import build_for_strategy, parallelize
from openseer.train.queue_checkpoint import gather_queues, restore_queue
from openseer.train.sharded_checkpoint import latest_sharded, load_sharded, save_sharded
from openseer.train.step import build_optimizer

log = logging.getLogger(__name__)

_BUDGET_GRID = 10_000  # resolution of the lr schedule over a wall-clock budget
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
    evaluation: dict | None = None
    """Filled by the caller that scores the run (openseer.eval.pretraining), not by the loop."""


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the message says what to change and where to resume from."""


def _finite_step(loss: torch.Tensor, model: torch.nn.Module) -> bool:
    if not torch.isfinite(loss):
        return False
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # one fused max-norm over all gradients: a NaN or Inf anywhere makes it non-finite, and, unlike a sum or
    # an L2 norm, large finite values cannot overflow it
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads, math.inf)).max())) if grads else True


def objective(
    cfg: PretrainConfig,
    model: SwAVModel,
    z: torch.Tensor,
    scores: torch.Tensor,
    queue: EmbeddingQueue | None = None,
    temperature: float | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The run's SwAV objective (codes, then swapped prediction) with its settings; the benchmarks time it too.
    ``temperature``: the swapped prediction's at this step (``swav.temperature_start``); None: the config's.

    The queue is stacked in once every process's queue is full, decided alike on all of them: their queues can
    fill at different steps (a batch cut short by unreadable files), and under FSDP scoring the queue gathers the
    prototypes, a collective that one process alone would wait in for ever.
    """
    stack = queue is not None and not distributed.any_process(not queue.full, z.device)
    return swav_objective(
        z,
        scores,
        model.head.prototypes,
        n_crops(cfg.crops),
        cfg.swav.crops_for_assign,
        cfg.swav.temperature if temperature is None else temperature,
        cfg.swav.epsilon,
        cfg.swav.sinkhorn_iters,
        queue,
        stack_queue=stack,
    )


def _divergence_message(step: int, streak: int, cfg: PretrainConfig, ckpt_dir: Path) -> str:
    last = latest_checkpoint(ckpt_dir)
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return (
        f"training diverged: {streak} steps in a row up to step {step} had a non-finite loss or gradient. "
        f"Likely causes: a learning rate too high (optim.base_lr={cfg.optim.base_lr}), a Sinkhorn epsilon too "
        f"small (swav.epsilon={cfg.swav.epsilon}), fp16 overflow (run.precision={cfg.run.precision}; try bf16 "
        f"or fp32). {where}; lower the lr and rerun with --resume."
    )


def _skipped_files(summary: Path, resume: bool, *logs: SkipLog) -> SkipLog:
    """Every unreadable file of the run once, with its reason: those of ``logs`` plus, when resuming, those the
    earlier part of the run recorded in ``summary``."""
    skipped = SkipLog.read_json(summary) if resume else SkipLog()
    for found in logs:
        skipped.extend(found)
    return skipped.distinct()


def pretrain(cfg: PretrainConfig, resume: bool = False) -> PretrainResult:
    # ============ setup ============
    device = distributed.resolve_device(cfg.run.device)
    distributed.init_from_env(device, cfg.run.dist_timeout_s)
    rank, world = distributed.rank(), distributed.world_size()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    out_dir = Path(cfg.run.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out_dir / "config.yaml")
    torch.manual_seed(cfg.run.seed)

    # ============ data ============
    data = prepare_data(cfg.data, seed=cfg.run.seed, progress=cfg.run.progress and distributed.is_main())
    log.info("data: %s", data.description)
    stream_kwargs = dict(
        batch_size=cfg.optim.batch_size,
        crops=cfg.crops,
        aug=cfg.augment,
        seed=cfg.run.seed,
        rank=rank,
        world_size=world,
        device=device,
        channels_last=cfg.model.channels_last,
    )
    if data.train_images is not None:
        batches = TensorBatches(data.train_images, **stream_kwargs)
    elif data.train_shards is not None:
        batches = ShardBatches(
            data.train_shards, workers=cfg.data.workers, max_pixels=cfg.data.max_pixels, **stream_kwargs
        )
    else:
        batches = LoaderBatches(
            data.train_paths, workers=cfg.data.workers, max_pixels=cfg.data.max_pixels, **stream_kwargs
        )
    steps_per_epoch = batches.steps_per_epoch

    # ============ model ============
    # whole on this device, or under FSDP built on the meta device and materialised shard by shard
    model = build_for_strategy(cfg, device)
    # DDP wrapper, or FSDP: `model` sharded in place (then its parameters are DTensor shards)
    train_model = parallelize(model, cfg.parallel, device, cfg.run.precision)
    # run.precision and run.compile; 'auto' ones are chosen by timing a few steps of the first batch
    fast = choose_fast_paths(cfg, model, train_model, batches, device, objective, out_dir)
    forward = fast.forward

    # ============ optimiser, schedule, queue ============
    optimizer = build_optimizer(cfg, model)
    lr_scale = cfg.optim.lr_scale(world)

    planned = cfg.optim.planned_steps(steps_per_epoch)  # the run the config describes (epochs of batches)

    def warmup_for(total: int) -> int:  # on the schedule's scale: steps, or cells of a time budget
        o = cfg.optim
        return warmup_length(
            total, planned, o.warmup_fraction, o.warmup_steps, o.warmup_epochs, steps_per_epoch
        )

    def make_schedule(total: int) -> torch.Tensor:
        return cosine_schedule(
            cfg.optim.base_lr * lr_scale,
            cfg.optim.final_lr * lr_scale,
            total,
            warmup_for(total),
            start=cfg.optim.start_lr * lr_scale,
            shape=cfg.optim.schedule_shape,
        )

    # With a wall-clock budget the schedule runs over the fraction of the budget spent, not over steps, so it
    # ends exactly when the budget does, whatever the speed of the machine (and of its neighbours).
    budget_s = cfg.run.budget_minutes * 60 if cfg.run.budget_minutes is not None else math.inf
    budgeted = math.isfinite(budget_s)
    if budgeted and fast.decision.autotune_s > 0:
        # Choosing the fast paths (trial steps, and a compile when one is tried) is part of the run's time:
        # it comes out of the budget, as a compile at the first step does.
        budget_s = max(budget_s - fast.decision.autotune_s, 0.0)
        log.info(
            "budget: %.0f s of training after %.1f s choosing fast paths", budget_s, fast.decision.autotune_s
        )
    total_steps = _BUDGET_GRID if budgeted else planned
    # main_swav's sizing: rounded down to whole global batches, then split over the processes
    local_queue = cfg.swav.local_queue_length(cfg.optim.batch_size, world)
    queue = EmbeddingQueue(len(cfg.swav.crops_for_assign), local_queue, cfg.model.out_dim, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.run.precision == "fp16")
    autocast = fast.autocast

    # ============ resume ============
    step, images_seen, train_seconds, nonfinite, bad_streak = 0, 0, 0.0, 0, 0
    sharded = cfg.parallel.strategy == "fsdp"  # checkpoints with torch.distributed.checkpoint
    if resume:
        path = latest_sharded(ckpt_dir) if sharded else latest_checkpoint(ckpt_dir)
        if path is None:
            log.warning("--resume: no usable checkpoint in %s, starting from scratch", ckpt_dir)
        else:
            if sharded:  # loaded in place and resharded to this number of processes
                state = load_sharded(path, model, optimizer, queue)
            else:
                state = load_checkpoint(path, map_location=device)
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                restore_queue(queue, state["queue"])  # this process's own queue
            scaler.load_state_dict(state["scaler"])
            step, total_steps = state["step"], state["total_steps"]
            images_seen, train_seconds = state["images_seen"], state["train_seconds"]
            nonfinite = state.get("nonfinite", 0)
            torch.set_rng_state(state["rng_cpu"].cpu())
            if device.type == "cuda" and state.get("rng_cuda"):
                torch.cuda.set_rng_state_all([t.cpu() for t in state["rng_cuda"]])
            log.info("resumed from %s at step %d of %d", path, step, total_steps)
    schedule = make_schedule(total_steps)
    # the softmax temperature's cosine, on the same scale as the learning rate's (no warm-up)
    t_start = cfg.swav.temperature_start
    temperatures = None if t_start is None else cosine_schedule(t_start, cfg.swav.temperature, total_steps)

    def at(values: torch.Tensor, at_step: int) -> float:  # a schedule's value now: by step, or by time spent
        if budgeted:
            return float(values[min(int(train_seconds / budget_s * _BUDGET_GRID), _BUDGET_GRID - 1)])
        return float(values[at_step])

    def save(at_step: int) -> None:
        # every process's queue, each to be given back to its process (a collective: before the others return)
        queues = None if sharded else gather_queues(queue)
        if not sharded and not distributed.is_main():
            return
        state = {
            "scaler": scaler.state_dict(),
            "step": at_step,
            "total_steps": total_steps,
            "images_seen": images_seen,
            "train_seconds": train_seconds,
            "nonfinite": nonfinite,
            "config": to_dict(cfg),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        }
        if sharded:  # every process writes its own shards
            save_sharded(ckpt_dir, at_step, model, optimizer, queue, state, keep=cfg.run.keep_checkpoints)
            return
        state.update(model=model.state_dict(), optimizer=optimizer.state_dict(), queue=queues)
        save_checkpoint(state, ckpt_dir, at_step, keep=cfg.run.keep_checkpoints)

    # ============ training loop ============
    writer = MetricsWriter(out_dir, cfg.run.tensorboard) if distributed.is_main() else None
    monitor = CollapseMonitor(
        cfg.model.prototypes,
        grace=max(0 if budgeted else warmup_for(total_steps), cfg.swav.freeze_prototypes_iters) + 100,
    )
    bar = None
    if cfg.run.progress and distributed.is_main():
        bar = ProgressBar(total_steps, step, budget_s if budgeted else None, train_seconds)
    stop_at = cfg.run.max_steps if cfg.run.max_steps is not None else math.inf
    loss_value, batches_iter, epoch = float("nan"), None, -1
    first_step_s: float | None = None
    window_start, window_images = time.perf_counter(), 0
    step_start = time.perf_counter()
    last_step = math.inf if budgeted else total_steps
    while step < min(last_step, stop_at) and train_seconds < budget_s:
        if step // steps_per_epoch != epoch or batches_iter is None:
            if epoch >= 0 and len(batches.skipped) and distributed.is_main():
                log.warning("epoch %d: %s", epoch, batches.skipped.summary())
            epoch = step // steps_per_epoch
            batches_iter = batches.epoch(epoch, start=step % steps_per_epoch)
        crops = next(batches_iter)
        # a batch of only unreadable files (counted in batches.skipped) is a step skipped by every process; like
        # any step it uses up one batch position (the streams' contract, openseer.train.data.BatchStream)
        if distributed.any_process(not crops, device):
            step += 1
            if step % cfg.run.checkpoint_every == 0:  # the checkpoint due at this step is still written
                save(step)
            continue
        bs = crops[0].shape[0]
        if cfg.progressive.start_scale < 1.0:  # smaller crops early in the run (openseer.data.progressive)
            share, p = (train_seconds / budget_s if budgeted else step / total_steps), cfg.progressive
            sides = [progressive_side(c.shape[-1], share, p.start_scale, p.until, p.multiple) for c in crops]
            crops = resize_crops(crops, sides)
        for group in optimizer.param_groups:
            group["lr"] = at(schedule, step)
        model.head.normalize_prototypes()

        # multi-crop forward: same-size crops share one backbone pass
        with autocast:
            z, scores = forward(crops)
        # codes for the assignment crops over the global batch (and the queue once it is full), swapped loss
        use_queue = queue.length > 0 and step >= cfg.swav.queue_start_epoch * steps_per_epoch
        temperature = None if temperatures is None else at(temperatures, step)
        loss, codes = objective(cfg, model, z, scores, queue if use_queue else None, temperature)

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if step < cfg.swav.freeze_prototypes_iters:  # prototypes frozen for the first iterations
            model.head.prototypes.weight.grad = None
        # a non-finite loss or gradient on any process skips the step everywhere (fp16 overflow is the
        # scaler's business: it skips and lowers its scale by itself)
        if not scaler.is_enabled():
            if distributed.any_process(not _finite_step(loss, model), device):
                nonfinite, bad_streak = nonfinite + 1, bad_streak + 1
                log.warning("step %d: non-finite loss or gradient, step skipped (%d so far)", step, nonfinite)
                if bad_streak >= cfg.run.max_nonfinite_steps:
                    raise TrainingDiverged(_divergence_message(step, bad_streak, cfg, ckpt_dir))
                optimizer.zero_grad(set_to_none=True)
                step += 1
                continue
        bad_streak = 0
        scaler.step(optimizer)
        scaler.update()

        step += 1
        images_seen += bs * world
        window_images += bs * world
        now = time.perf_counter()
        if first_step_s is None:  # includes a compilation left to the first step (autotune's cached choice)
            first_step_s = now - step_start
            if distributed.is_main():  # what that compilation cost, for the next run's choice
                record_first_compile(cfg, device, fast.decision, first_step_s)
        train_seconds += now - step_start
        step_start = now

        # ============ logging and checkpoints ============
        loss_value = float(loss.detach())
        if step % cfg.run.log_every == 0 or step == last_step:
            health = cluster_health(codes[0])
            with torch.no_grad():  # mean cosine between embeddings of the batch: -> 1 when features collapse
                z0 = z[:bs].float()
                health["embedding_similarity"] = float((z0 @ z0.t()).mean())
            rate = window_images / max(now - window_start, 1e-9)
            window_start, window_images = now, 0
            metrics = {
                "loss": loss_value,
                "lr": optimizer.param_groups[0]["lr"],
                "imgs_per_s": rate,
                "crop_side": crops[0].shape[-1],
                "epoch": step / steps_per_epoch,
                **health,
            }
            if temperature is not None:
                metrics["temperature"] = temperature
            if writer is not None:
                writer.write(step, metrics)
            warning = monitor.update(step, loss_value, health["usage_entropy"])
            if warning and distributed.is_main():
                log.warning(warning)
        if bar is not None:
            lr_now = optimizer.param_groups[0]["lr"]
            bar.update(step, train_seconds, loss_value, images_seen / max(train_seconds, 1e-9), lr_now)
        if step % cfg.run.checkpoint_every == 0:
            save(step)
            step_start = time.perf_counter()  # checkpoint I/O is not training time

    if batches_iter is not None:
        batches_iter.close()  # stops the prefetching thread
    if bar is not None:
        bar.close()
    save(step)
    skipped = _skipped_files(out_dir / SKIPPED_FILE, resume, data.skipped, batches.skipped)
    if distributed.is_main():
        skipped.write_json(out_dir / SKIPPED_FILE)
        if len(skipped):
            log.warning("%s\n(all of them in %s)", skipped.summary(), out_dir / SKIPPED_FILE)

    result = PretrainResult(
        out_dir=out_dir,
        steps=step,
        images_seen=images_seen,
        train_seconds=train_seconds,
        final_loss=loss_value,
        skipped_images=len(skipped),
        nonfinite_steps=nonfinite,
        first_step_seconds=first_step_s,
    )
    if writer is not None:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items()}
        summary.update(fast.decision.summary())  # precision and compile as used, and why (autotune.json: all)
        writer.write(step, {f"final/{k}": v for k, v in summary.items() if isinstance(v, int | float)})
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
        writer.close()
    return result
