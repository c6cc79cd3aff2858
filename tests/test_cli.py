"""What the command line says when something is wrong: one line naming the problem and an exit code, never a
traceback. 2: a user error (config, data, checkpoint, diverged run); 3: out of memory."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import FAST_EVAL

import openseer
from openseer.cli import EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR, is_out_of_memory
from openseer.cli import main as cli_main
from openseer.fileio.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint

TINY = [
    "model.arch=regnety_200mf",
    "model.stem=small",
    "model.head_hidden=[32]",
    "model.out_dim=16",
    "model.prototypes=10",
    "crops=[{size: 16, count: 2, scale: [0.3, 1.0]}]",
    "data.cache_size=16",
    "data.workers=0",
    "optim.batch_size=4",
    "run.progress=false",
    "run.tensorboard=false",
    "run.evaluate=false",
]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    """The last line written to stderr (log lines come before it)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def _images(folder: Path, n: int = 8) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (20, 20), (30 * i, 100, 200 - 20 * i)).save(folder / f"{i}.png")
    return folder


# ============ data ============


def test_missing_data_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        ["pretrain", *TINY, f"data.source={tmp_path / 'nope'}", f"run.out_dir={tmp_path / 'run'}"]
    )
    assert code == EXIT_USER_ERROR == 2
    assert _error(capsys) == f"openseer: error: data path does not exist: {tmp_path / 'nope'}"


def test_folder_without_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no pixels here")
    code = cli_main(
        ["pretrain", *TINY, f"data.source={tmp_path / 'empty'}", f"run.out_dir={tmp_path / 'run'}"]
    )
    assert code == 2
    message = _error(capsys)
    assert message.startswith(f"openseer: error: no images found under {tmp_path / 'empty'}")
    assert ".jpg" in message and ".png" in message  # what it looked for
    assert cli_main(["embed", str(tmp_path / "run"), f"data={tmp_path / 'empty'}", *FAST_EVAL]) == 2


# ============ config ============


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.base_lrr=0.1", "unknown config key 'optim.base_lrr'; did you mean 'optim.base_lr'?"),
        ("optim.batch_size=abc", "config key 'optim.batch_size': got 'abc', expected int"),
        (
            "run.precision=fp8",
            "config key 'run.precision': got 'fp8', expected one of 'fp32', 'bf16', 'fp16'",
        ),
        (
            "model.arch=regnety_9gf",
            "config key 'model.arch': got 'regnety_9gf', expected one of regnety_200mf,",
        ),
        (
            "parallel.strategy=zero3",
            "config key 'parallel.strategy': got 'zero3', expected one of 'ddp', 'fsdp'",
        ),
        (
            "swav.crops_for_assign=[0,3]",
            "config key 'swav.crops_for_assign': crop 3 asked for, but 'crops' defines 2 (indices 0..1)",
        ),
    ],
)
def test_config_errors_name_the_key_and_what_is_allowed(
    override: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["pretrain", *TINY, f"run.out_dir={tmp_path / 'run'}", override])
    assert code == 2
    assert _error(capsys).startswith(f"openseer: error: {expected}")
    assert not (tmp_path / "run").exists()  # stopped before any work


# ============ out of memory ============


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 80000000000 bytes."),
        MemoryError(),
    ],
    ids=["cuda", "cpu-allocator", "python"],
)
def test_out_of_memory_gives_advice_not_a_traceback(
    error: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import openseer.train.pretrain as loop

    def run_out(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(loop, "pretrain", run_out)
    assert cli_main(["pretrain", *TINY]) == EXIT_OUT_OF_MEMORY == 3
    message = _error(capsys)
    assert message.startswith("openseer: error: out of memory (")
    for key in ("optim.batch_size", "crops[i].count", "parallel.activation_checkpointing=true", "--resume"):
        assert key in message


def test_other_runtime_errors_are_not_taken_for_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import openseer.train.pretrain as loop

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(loop, "pretrain", fail)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        cli_main(["pretrain", *TINY])
    assert not is_out_of_memory(ValueError("out of memory"))


# ============ disk full ============


@pytest.mark.slow
def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _images(tmp_path / "imgs")
    run = tmp_path / "run"
    real_save, saves = torch.save, [0]

    def save_until_full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        saves[0] += isinstance(obj, dict) and "step" in obj  # a checkpoint, not the decoded-image cache
        if saves[0] >= 2:  # the second checkpoint meets a full disk half-way
            f.write(b"PK\x03\x04 the first bytes")  # type: ignore[attr-defined]
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    overrides = [f"data.source={images}", f"run.out_dir={run}", "run.checkpoint_every=1", "run.max_steps=3"]
    assert cli_main(["pretrain", *TINY, *overrides]) == 2
    message = _error(capsys)
    assert message.startswith("openseer: error: disk full ([Errno 28] No space left on device)")
    assert "--resume" in message and "run.keep_checkpoints" in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt-00000001.pt",
        "ckpt-00000001.sha256",
    ]
    assert load_checkpoint(latest_checkpoint(run / "checkpoints"))["step"] == 1


# ============ checkpoints of another architecture ============


@pytest.fixture
def mislabelled_run(tmp_path: Path) -> tuple[Path, Path]:
    """(run folder whose checkpoint holds RegNetY-200MF weights but names RegNetY-400MF, its image folder)."""
    images = _images(tmp_path / "imgs")
    run = tmp_path / "run"
    assert (
        cli_main(["pretrain", *TINY, f"data.source={images}", f"run.out_dir={run}", "run.max_steps=0"]) == 0
    )
    state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    state["config"]["model"]["arch"] = "regnety_400mf"
    other = tmp_path / "other"
    save_checkpoint(state, other / "checkpoints", step=0)
    return other, images


@pytest.mark.slow
def test_embed_with_a_checkpoint_of_another_architecture(
    mislabelled_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, images = mislabelled_run
    capsys.readouterr()
    assert cli_main(["embed", str(run), f"data={images}", *FAST_EVAL]) == 2
    message = _error(capsys)
    assert "does not fit" in message
    for part in ("missing (", "unexpected (", "mismatched ("):
        assert part in message
    assert "s1.b1.conv2.conv.weight: file (24, 8, 3, 3) vs model (48, 8, 3, 3)" in message


@pytest.mark.slow
def test_load_and_import_weights_list_the_keys_that_do_not_fit(
    mislabelled_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = mislabelled_run
    with pytest.raises(CheckpointError) as info:
        openseer.load(run)
    for part in ("as a regnety_400mf backbone does not fit", "missing (", "unexpected (", "mismatched ("):
        assert part in str(info.value)
    assert (
        cli_main(
            ["import-weights", str(latest_checkpoint(run / "checkpoints")), str(tmp_path / "w.safetensors")]
        )
        == 2
    )
    message = _error(capsys)
    assert "missing (" in message and "unexpected (" in message and "mismatched (" in message
