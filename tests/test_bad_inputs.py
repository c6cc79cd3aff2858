"""A folder of every kind of troublesome file, through the loader, pretraining (cached and streaming), embed and
predict: each stage finishes, uses every good or convertible image, and skips and lists each bad one with its
reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file
from support import FAST_EVAL, tiny_classifier, tiny_overrides
from support.bad_corpus import BOMB_SIDE, CorpusEntry, write_bad_corpus

from openseer.cli import main as cli_main
from openseer.data.folders import list_images
from openseer.data.images import BadImageError, load_rgb
from openseer.eval.classifier import save_classifier
from openseer.fileio.checkpoint import latest_checkpoint


def _locked(path: object) -> bool:
    """No read permission for anyone: what ``chmod 000`` leaves."""
    try:
        return os.stat(path).st_mode & 0o444 == 0  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):  # file objects, buffers
        return False


@pytest.fixture
def unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root reads a ``chmod 000`` file all the same; as root, refuse such files as the kernel refuses everyone
    else, so that the permission path is tested whoever runs the suite."""
    if os.geteuid() != 0:
        return
    real_open, real_access = Image.open, os.access

    def open_unless_locked(fp, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - PIL's signature
        if _locked(fp):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    def access_unless_locked(path, mode, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return False if _locked(path) and mode & os.R_OK else real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_unless_locked)
    monkeypatch.setattr(os, "access", access_unless_locked)


@pytest.fixture
def corpus(tmp_path: Path, unprivileged: None) -> tuple[Path, list[CorpusEntry]]:
    folder = tmp_path / "corpus"
    return folder, write_bad_corpus(folder)


def _files(entries: list[CorpusEntry]) -> list[CorpusEntry]:
    return [e for e in entries if e.is_image_file]


def _usable(entries: list[CorpusEntry]) -> set[str]:
    return {str(e.path) for e in _files(entries) if e.outcome != "skipped"}


def _bad(entries: list[CorpusEntry]) -> dict[str, str]:
    return {str(e.path): e.reason for e in _files(entries) if e.outcome == "skipped"}


def _as_dict(rows: list[dict]) -> dict[str, str]:
    return {row["path"]: row["reason"] for row in rows}


# ============ the corpus and the loader ============


def test_corpus_holds_every_kind_it_claims(corpus: tuple[Path, list[CorpusEntry]]) -> None:
    folder, entries = corpus
    kinds = {e.kind: e for e in entries}
    assert len(kinds) == len(entries) - 4  # three good JPEGs and three good PNGs share two kinds
    assert {e.outcome for e in entries} == {"used", "converted", "skipped"}
    modes = {}
    for kind in ("CMYK JPEG", "16-bit PNG", "palette PNG with transparency", "grayscale+alpha PNG"):
        with Image.open(kinds[kind].path) as img:
            modes[kind] = (img.mode, "transparency" in img.info)
    assert modes["CMYK JPEG"][0] == "CMYK" and modes["16-bit PNG"][0] in {"I;16", "I"}
    assert modes["palette PNG with transparency"] == ("P", True) and modes["grayscale+alpha PNG"][0] == "LA"
    for kind in ("animated GIF", "animated WebP"):
        with Image.open(kinds[kind].path) as img:
            assert img.n_frames == 2
    with Image.open(kinds["EXIF-rotated JPEG"].path) as img:
        assert img.getexif()[0x0112] == 6 and img.size == (32, 24)
    bomb = kinds[f"decompression bomb ({BOMB_SIDE}x{BOMB_SIDE} declared)"].path
    assert bomb.stat().st_size < 200  # declared, never allocated
    assert kinds["zero-byte file"].path.stat().st_size == 0
    assert kinds["unreadable file (chmod 000)"].path.stat().st_mode & 0o777 == 0
    loop = kinds["symlink loop"].path
    assert loop.is_symlink() and loop.resolve() == folder.resolve()


def test_loader_uses_converts_and_skips_as_expected(corpus: tuple[Path, list[CorpusEntry]]) -> None:
    folder, entries = corpus
    for entry in _files(entries):
        if entry.outcome == "skipped":
            with pytest.raises(BadImageError) as info:
                load_rgb(entry.path)
            assert (entry.kind, info.value.reason) == (entry.kind, entry.reason)
        else:
            img = load_rgb(entry.path)
            assert (entry.kind, img.mode, img.size) == (entry.kind, "RGB", entry.size)
    # the loop is not followed: every file is listed once, none through the link
    assert list_images(folder) == sorted(e.path for e in _files(entries))


# ============ pretraining ============


def _pretrain_overrides(source: Path, out: Path, cache_size: int | None, batch: int) -> list[str]:
    return tiny_overrides(
        source, out, data__cache_size=cache_size, data__holdout=0.1, optim__batch_size=batch, run__threads=1
    )


@pytest.mark.parametrize(
    ("cache_size", "batch"),
    [(16, 7), (None, 4)],  # one epoch draws every file: 14 usable of 20 files (streaming: every file)
    ids=["cached-tensors", "streaming"],
)
@pytest.mark.slow
def test_pretraining_uses_every_good_image_and_lists_every_bad_one(
    corpus: tuple[Path, list[CorpusEntry]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cache_size: int | None,
    batch: int,
) -> None:
    folder, entries = corpus
    run = tmp_path / "run"
    code = cli_main(["pretrain", *_pretrain_overrides(folder, run, cache_size, batch)])
    out = capsys.readouterr().out
    assert code == 0
    bad = _bad(entries)
    listed = _as_dict(json.loads((run / "skipped_images.json").read_text()))
    assert listed == bad  # every bad file once, with the loader's reason
    assert f"skipped images: {len(bad)} unreadable files" in out and str(run / "skipped_images.json") in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_images"] == len(bad)
    # every usable image went into a batch (a batch that lost all its files is a skipped step)
    assert summary["images_seen"] == len(_usable(entries)) == 14
    assert latest_checkpoint(run / "checkpoints") is not None


# ============ embed and predict ============


def _checkpoint_without_training(source: Path, out: Path) -> Path:
    """A pretraining run folder with the step-0 checkpoint of the tiny model."""
    assert cli_main(["pretrain", *_pretrain_overrides(source, out, 16, 7), "run.max_steps=0"]) == 0
    return out


@pytest.mark.slow
def test_embed_reports_every_unreadable_file(
    corpus: tuple[Path, list[CorpusEntry]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, entries = corpus
    run = _checkpoint_without_training(folder, tmp_path / "run")
    capsys.readouterr()
    out = tmp_path / "feats.safetensors"
    assert cli_main(["embed", str(run), f"data={folder}", f"out={out}", *FAST_EVAL]) == 0
    printed = capsys.readouterr().out
    index = json.loads((tmp_path / "feats.json").read_text())
    assert set(index["items"]) == _usable(entries) and len(index["items"]) == 14
    assert load_file(out)["features"].shape[0] == 14
    assert _as_dict(index["skipped"]) == _bad(entries)
    assert f"skipped {len(_bad(entries))} files" in printed
    for path in _bad(entries):
        assert path in printed


def _classifier(folder: Path, classes: list[str]) -> Path:
    save_classifier(
        tiny_classifier(classes, head_bn=False), folder / "checkpoints", protocol="linear", source=None
    )
    return folder


def test_predict_over_the_folder_answers_for_every_file(
    corpus: tuple[Path, list[CorpusEntry]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, entries = corpus
    clf = _classifier(tmp_path / "clf", ["a", "b"])
    code = cli_main(["predict", str(clf), str(folder), "--json", "topk=2"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1  # finished, with some images unreadable
    answered = {p["image"]: p for p in result["predictions"]}
    assert set(answered) == {str(e.path) for e in _files(entries)}
    assert {p for p, a in answered.items() if "predictions" in a} == _usable(entries)
    assert {p: a["error"] for p, a in answered.items() if "error" in a} == _bad(entries)


def test_predict_scores_a_labelled_set_with_bad_files(
    tmp_path: Path, unprivileged: None, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = tmp_path / "labelled"
    entries = {name: write_bad_corpus(labelled / name) for name in ("a", "b")}
    clf = _classifier(tmp_path / "clf", ["a", "b"])
    code = cli_main(["predict", str(clf), f"data={labelled}", "--json", "workers=0"])
    evaluation = json.loads(capsys.readouterr().out)["evaluation"]
    assert code == 0
    assert evaluation["images"] == 28 and sum(map(sum, evaluation["confusion"])) == 28
    assert _as_dict(evaluation["skipped"]) == {**_bad(entries["a"]), **_bad(entries["b"])}
