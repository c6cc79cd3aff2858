"""Labelled and unlabelled image sets, for pretraining's held-out split and for every evaluation command.

One spec string (``builtin``, ``builtin:test``, an ImageFolder tree, a CSV of ``path,label``, a folder or list of
images) -> an :class:`EvalData`; :func:`train_test_data` splits a labelled set the way pretraining holds out.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from openseer.config import ConfigError
from openseer.data.builtin import load_builtin
from openseer.data.cache import cache_key
from openseer.data.folders import DataError, LabelledImages, has_class_folders, list_images, split_per_class
from openseer.data.images import BadImageError, SkipLog, load_rgb

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
    :func:`split_per_class` (``holdout``, ``seed``), the split pretraining holds out with data.holdout and
    run.seed, so that the test images were never seen during pretraining.
    """
    train = load_data(train_spec, "train", labels="required")
    if test_spec is None and train.name == "builtin:train":
        test_spec = "builtin:test"
    if test_spec is None:
        if not 0.0 < holdout < 1.0:
            raise ConfigError(
                f"holdout: got {holdout}, expected a fraction in (0, 1) when no test set is given"
            )
        train_idx, test_idx = split_per_class(train.targets, holdout, seed=seed)
        name = train.name
        return (
            train.subset(train_idx, f"{name} (train part)"),
            train.subset(test_idx, f"{name} (held-out {holdout:g})"),
        )
    test = load_data(test_spec, "test", labels="required")
    return train, align_classes(test, train.classes, f"the training set {train.name}")
