"""Run monitoring: collapse warnings (loss pinned at ln K, codes on a few prototypes) and JSON-lines metrics."""

import json
import math

from openseer.train.monitor import CollapseMonitor, MetricsWriter

K = 300


def _run(monitor, steps, loss, entropy):
    return [(step, msg) for step in range(steps) if (msg := monitor.update(step, loss(step), entropy(step)))]


def test_warns_once_when_loss_stays_at_log_k():
    monitor = CollapseMonitor(K, grace=100, window=20)
    warnings = _run(monitor, 400, loss=lambda s: math.log(K), entropy=lambda s: 0.9)
    assert len(warnings) == 1
    step, message = warnings[0]
    assert step == 100  # the first step after the grace period, the window being full
    assert "ln K" in message and f"{math.log(K):.3f}" in message
    assert "optim.base_lr" in message  # comes with advice


def test_quiet_during_grace_even_when_collapsed():
    monitor = CollapseMonitor(K, grace=1000, window=10)
    assert _run(monitor, 999, loss=lambda s: math.log(K), entropy=lambda s: 0.0) == []


def test_waits_for_a_full_window():
    monitor = CollapseMonitor(K, grace=0, window=30)
    warnings = _run(monitor, 100, loss=lambda s: math.log(K), entropy=lambda s: 0.9)
    assert [step for step, _ in warnings] == [29]


def test_warns_when_usage_entropy_is_tiny():
    monitor = CollapseMonitor(K, grace=50, window=10)
    warnings = _run(monitor, 300, loss=lambda s: 0.5 * math.log(K), entropy=lambda s: 0.05)
    assert len(warnings) == 1
    assert "handful of prototypes" in warnings[0][1] and "0.05" in warnings[0][1]


def test_both_kinds_warn_once_each():
    monitor = CollapseMonitor(K, grace=0, window=5)
    warnings = _run(monitor, 50, loss=lambda s: math.log(K), entropy=lambda s: 0.01)
    assert len(warnings) == 2
    assert "ln K" in warnings[0][1] and "handful" in warnings[1][1]


def test_quiet_on_a_healthy_run():
    monitor = CollapseMonitor(K, grace=50, window=20)
    # loss starts at ln K during warm-up and falls; usage stays spread
    warnings = _run(
        monitor,
        2000,
        loss=lambda s: math.log(K) * max(0.3, 1 - s / 100),
        entropy=lambda s: 0.6 + 0.3 * (s % 2),
    )
    assert warnings == []
    assert monitor.warned == set()


def test_mean_over_window_not_single_steps():
    monitor = CollapseMonitor(K, grace=0, window=10)
    # every 5th step spikes to ln K: the mean stays far below 0.98 ln K
    warnings = _run(monitor, 200, loss=lambda s: math.log(K) if s % 5 == 0 else 2.0, entropy=lambda s: 0.9)
    assert warnings == []


def test_metrics_writer_appends_json_lines(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(10, {"loss": 5.7, "lr": 0.6, "protos_used": 120.0, "note": "warm-up"})
    writer.write(20, {"loss": float("nan"), "lr": 0.59})
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {"step": 10, "loss": 5.7, "lr": 0.6, "protos_used": 120.0, "note": "warm-up"}
    second = json.loads(lines[1])
    assert second["step"] == 20 and math.isnan(second["loss"])
    # a resumed run appends
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(30, {"loss": 4.0})
    writer.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        10,
        20,
        30,
    ]


def test_budgeted_progress_bar_runs_over_the_time_budget(capsys) -> None:
    from openseer.train.monitor import ProgressBar

    bar = ProgressBar(total_steps=10_000, step=0, budget_s=300.0, seconds=60.0)  # resumed after a minute
    bar.update(step=5, seconds=90.0, loss=4.2, imgs_per_s=250.0, lr=0.1)
    assert bar._bar.total == 300.0 and bar._bar.n == 90.0
    bar.update(step=6, seconds=400.0, loss=4.1, imgs_per_s=250.0, lr=0.1)  # the last step overshoots
    assert bar._bar.n == 300.0
    bar.close()
    shown = capsys.readouterr().err
    assert "300/300 s" in shown and "img_s=250" in shown and "loss=4.100" in shown


def test_epoch_progress_bar_counts_steps(capsys) -> None:
    from openseer.train.monitor import ProgressBar

    bar = ProgressBar(total_steps=40, step=10, budget_s=None)
    bar.update(step=11, seconds=1.0, loss=3.0, imgs_per_s=100.0, lr=0.5)
    assert bar._bar.total == 40 and bar._bar.n == 11
    bar.close()
    assert "11/40" in capsys.readouterr().err
