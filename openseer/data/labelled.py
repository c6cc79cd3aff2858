"""Labelled and unlabelled image sets, for pretraining's held-out split and for every evaluation command.

One spec string (``builtin``, ``builtin:test``, an ImageFolder tree, a CSV of ``path,label``, a folder or list of
images) -> an :class:`EvalData`. :func:`split_source` cuts a pretraining source into the part pretraining trains
on and the part it holds out (built-in data: its two splits; a labelled folder: a share of each class); the run
folder keeps a record of it (:class:`Holdout`, ``RUN/holdout.json``) that every command scoring the run reads
back, so that its test images are the ones pretraining never saw.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from openseer.config import ConfigError
from openseer.data.builtin import load_builtin
from openseer.data.cache import cache_key
from openseer.data.folders import DataError, LabelledImages, has_class_folders, list_images, split_per_class
from openseer.data.images import BadImageError, SkipLog, load_rgb
from openseer.data.preprocess import Preprocess
from openseer.fileio.atomic import atomic_write_text

log = logging.getLogger(__name__)

# Bump when the way features are computed changes, so stale cache entries are not reused.
FORMAT_VERSION = 2


@dataclass
class EvalData:
    """Images to embed, held as uint8 (N,3,H,W) in memory or as N file paths; labels when known.

    ``name`` says where the images came from (``builtin:train``, a folder...), for logs and result files.
    ``targets`` (N,) int64 index ``classes``.
    """

    name: str
    targets: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)
    images: torch.Tensor | None = None
    paths: list[Path] | None = None
    _key: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths or [])

    @property
    def labelled(self) -> bool:
        return self.targets is not None

    def subset(self, idx: torch.Tensor, name: str | None = None) -> EvalData:
        """The rows ``idx`` (K,) of this set, in that order."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return EvalData(
            name=name or self.name,
            targets=self.targets[idx] if self.targets is not None else None,
            classes=list(self.classes),
            images=self.images[idx] if self.images is not None else None,
            paths=[self.paths[i] for i in idx.tolist()] if self.paths is not None else None,
        )

    def key(self) -> str:
        """Content identity: the pixels of in-memory images, or each file's path, size and mtime."""
        if self._key is None:
            h = hashlib.sha256(f"v{FORMAT_VERSION}".encode())
            if self.images is not None:
                h.update(str(tuple(self.images.shape)).encode())
                h.update(memoryview(self.images.contiguous().numpy()).cast("B"))
            else:
                h.update(cache_key(self.paths or [], 0).encode())
            self._key = h.hexdigest()
        return self._key

    def unreadable(self, used: torch.Tensor) -> SkipLog:
        """The files of this set whose rows are not in ``used`` (M,), each with the reason it cannot be read.

        The reasons come from decoding those files once more (unreadable files fail fast), so that features read
        back from the cache report them as well. In-memory images are always readable.
        """
        skipped = SkipLog()
        kept = set(used.tolist())
        for i, path in enumerate(self.paths or []):
            if i not in kept:
                try:
                    load_rgb(path)
                    skipped.add(path, "unreadable when the features were computed")
                except BadImageError as err:
                    skipped.add(path, err.reason)
        return skipped

    def fitted(self, preprocess: Preprocess) -> Preprocess:
        """How this set's images become network inputs: ``preprocess``, except that images held in memory (the
        built-in data, the decoded-image cache) are already squares of the whole image, so they are resized whole
        instead of being cropped a second time."""
        return preprocess.with_resize("whole") if self.images is not None else preprocess

    def items(self, index: torch.Tensor | None = None) -> list[str]:
        """A name per row (file path, or ``name#row`` for in-memory images)."""
        rows = range(len(self)) if index is None else index.tolist()
        if self.paths is not None:
            return [str(self.paths[i]) for i in rows]
        return [f"{self.name}#{i}" for i in rows]


def _csv_has_labels(path: Path) -> bool:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return "label" in {name.strip().lower() for name in header}


def load_data(
    spec: str, split: Literal["train", "test"] = "train", labels: Literal["auto", "required", "none"] = "auto"
) -> EvalData:
    """Resolve a data spec into an :class:`EvalData`.

    ``builtin`` (its ``split``), ``builtin:train`` / ``builtin:test``; a folder (labelled when every image sits
    in a class sub-folder, or when ``labels='required'``); a CSV with ``path,label`` columns; a .txt/.csv list
    of paths (unlabelled). Raises DataError for anything unusable, and for unlabelled data when labels are
    required.
    """
    if spec == "builtin" or spec.startswith("builtin:"):
        which = spec.partition(":")[2] or split
        if which not in ("train", "test"):
            raise DataError(f"unknown built-in split '{which}' (use builtin:train or builtin:test)")
        b = load_builtin(which)  # type: ignore[arg-type]
        return EvalData(f"builtin:{which}", b.targets, b.classes, images=b.images)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data path does not exist: {path}")
    if labels != "none":
        if path.is_file() and path.suffix.lower() == ".csv" and _csv_has_labels(path):
            d = LabelledImages.from_csv(path)
            return EvalData(str(path), d.targets, d.classes, paths=d.paths)
        if path.is_dir() and (labels == "required" or has_class_folders(path, list_images(path))):
            d = LabelledImages.from_folder(path)
            if not d.paths:
                raise DataError(f"no images found in the class folders under {path}")
            return EvalData(str(path), d.targets, d.classes, paths=d.paths)
        if labels == "required":
            raise DataError(
                f"{path} has no labels: give a folder with one sub-folder per class, or a CSV with a "
                "'path,label' header"
            )
    return EvalData(str(path), paths=list_images(path))


def align_classes(data: EvalData, classes: Sequence[str], what: str = "the classifier") -> EvalData:
    """``data`` with targets re-indexed into ``classes``; its classes must all be among them.

    Raises DataError naming the unknown classes: a test set or a checkpoint with other classes cannot be scored.
    """
    if data.targets is None or list(data.classes) == list(classes):
        return data
    index = {name: i for i, name in enumerate(classes)}
    unknown = [c for c in data.classes if c not in index]
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise DataError(
            f"{data.name} has classes that {what} does not know: {shown} "
            f"(known: {', '.join(list(classes)[:20])}{' ...' if len(classes) > 20 else ''})"
        )
    remap = torch.tensor([index[c] for c in data.classes], dtype=torch.long)
    return replace(data, targets=remap[data.targets], classes=list(classes), _key=data._key)


def train_test_data(
    train_spec: str, test_spec: str | None, holdout: float = 0.1, seed: int = 0
) -> tuple[EvalData, EvalData]:
    """Labelled training and test sets.

    Without ``test_spec``: ``builtin`` pairs with ``builtin:test``; any other set is split per class with
    :func:`split_per_class` (``holdout`` of each class, drawn with ``seed``).
    """
    if test_spec is None:
        if not 0.0 < holdout < 1.0 and not _is_builtin(train_spec):  # builtin is paired with its test split
            raise ConfigError(
                f"holdout: got {holdout}, expected a fraction in (0, 1) when no test set is given"
            )
        split = split_source(train_spec, "required", holdout, seed)
        assert split.test is not None  # labels required and 0 < holdout < 1
        return split.train, split.test
    train = load_data(train_spec, "train", labels="required")
    test = load_data(test_spec, "test", labels="required")
    return train, align_classes(test, train.classes, f"the training set {train.name}")


# ============ pretraining's held-out split ============

HOLDOUT_FILE = "holdout.json"
"""The run folder's record of its :class:`Split` (a :class:`Holdout`)."""

Labels = Literal["auto", "folder", "required", "none"]


def _is_builtin(spec: str) -> bool:
    """``builtin`` and ``builtin:train`` name the data pretraining takes as ``builtin`` (its test split held out)."""
    return spec in ("builtin", "builtin:train")


@dataclass
class Split:
    """A data source cut into the images pretraining trains on (``train``) and those it holds out, never trained
    on, to score the features (``test``: None when nothing is held out, for unlabelled data or a holdout of 0).

    ``source``: the spec the parts come from; ``holdout`` and ``seed``: the share of each class held out and the
    seed that drew it.
    """

    source: str
    train: EvalData
    test: EvalData | None
    holdout: float = 0.0
    seed: int = 0

    @property
    def labelled(self) -> bool:
        return self.train.labelled

    def record(self) -> Holdout:
        """What the run folder keeps of this split (:class:`Holdout`)."""
        source = self.source if _is_builtin(self.source) else str(Path(self.source).expanduser().absolute())
        test: str | dict | None = None
        if self.test is not None and self.test.paths is None:
            test = self.test.name  # another split of the built-in data
        elif self.test is not None:
            root = _root(Path(source))
            test = {
                "paths": [_relative(Path(p).absolute(), root) for p in self.test.paths],
                "labels": self.test.targets.tolist() if self.test.targets is not None else None,
            }
        classes = list(self.train.classes) if self.labelled else None
        return Holdout(source, self.holdout, self.seed, classes, test)


@dataclass
class Holdout:
    """The record of a pretraining run's :class:`Split` (``RUN/holdout.json``).

    ``source``: an absolute path, or ``builtin``; ``classes``: its class names (None: unlabelled); ``test``: the
    held-out images as ``{"paths": [relative to the source's folder], "labels": [class index]}``, the name of
    another split (the built-in data's ``builtin:test``), or None when nothing was held out. Every other image of
    the source is the training part.
    """

    source: str
    holdout: float
    seed: int
    classes: list[str] | None
    test: str | dict | None

    def same_source(self, spec: str) -> bool:
        """Whether ``spec`` names the recorded source (the built-in data, or the same file or folder)."""
        if _is_builtin(spec) or _is_builtin(self.source):
            return _is_builtin(spec) and _is_builtin(self.source)
        return Path(spec).expanduser().resolve() == Path(self.source).resolve()

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(Path(path), json.dumps({"format": 1, **asdict(self)}, indent=1) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Holdout:
        """The record :meth:`save` wrote; DataError when it cannot be read."""
        try:
            record = json.loads(Path(path).read_text())
            return cls(
                str(record["source"]),
                float(record["holdout"]),
                int(record["seed"]),
                record["classes"],
                record["test"],
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"cannot read the held-out split {path}: {err}") from err

    def split(self) -> Split:
        """The recorded split, its parts rebuilt from the source as it is now: the recorded held-out images are
        the test part, every other image of the source the training part.

        Raises DataError when the source's classes are no longer the recorded ones; held-out files that have
        gone are left out, with a warning.
        """
        if _is_builtin(self.source):
            test = load_data(self.test) if isinstance(self.test, str) else None
            return Split(self.source, load_data("builtin:train"), test, self.holdout, self.seed)
        data = load_data(self.source, "train", labels="required" if self.classes is not None else "none")
        if self.classes is not None and list(data.classes) != list(self.classes):
            raise DataError(
                f"{self.source} now has the classes {data.classes}, not the {self.classes} its pretraining "
                "recorded: the held-out split no longer matches the data; give train= and test= explicitly"
            )
        if not isinstance(self.test, dict):
            return Split(self.source, data, None, self.holdout, self.seed)
        root = _root(Path(self.source))
        rows = {Path(p).absolute(): i for i, p in enumerate(data.paths or [])}
        held = [rows.get(root / p) for p in self.test["paths"]]
        if None in held:
            log.warning("%d held-out files of %s are gone", held.count(None), self.source)
        test_rows = torch.tensor([i for i in held if i is not None], dtype=torch.long)
        mask = torch.ones(len(data), dtype=torch.bool)
        mask[test_rows] = False
        train_name, test_name = _part_names(self.source, self.holdout)
        train = data.subset(torch.nonzero(mask).flatten(), train_name)
        return Split(self.source, train, data.subset(test_rows, test_name), self.holdout, self.seed)


def _root(source: Path) -> Path:
    return source if source.is_dir() else source.parent


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _part_names(source: str, holdout: float) -> tuple[str, str]:
    return f"{source} (train part)", f"{source} (held-out {holdout:g})"


def split_source(source: str, labels: Labels = "auto", holdout: float = 0.1, seed: int = 0) -> Split:
    """The :class:`Split` pretraining makes of ``source`` (data.source, data.labels, data.holdout, run.seed).

    ``builtin``: its train split, and its test split held out. A labelled set (``labels``: 'folder' or
    'required' insists on class folders, 'auto' detects them, 'none' never reads labels; see :func:`load_data`):
    ``holdout`` of each class held out with :func:`split_per_class` (nothing when ``holdout`` is 0). Unlabelled
    data: everything is trained on.
    """
    if _is_builtin(source):
        return Split("builtin", load_data("builtin:train"), load_data("builtin:test"), holdout, seed)
    data = load_data(source, "train", labels="required" if labels == "folder" else labels)
    if not data.labelled or holdout <= 0:
        return Split(source, data, None, holdout, seed)
    train_idx, test_idx = split_per_class(data.targets, holdout, seed=seed)
    train_name, test_name = _part_names(source, holdout)
    return Split(source, data.subset(train_idx, train_name), data.subset(test_idx, test_name), holdout, seed)
