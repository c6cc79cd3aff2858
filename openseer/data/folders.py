"""Image datasets read from folders or path lists, labelled or not, plus per-class splits."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes

from openseer.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, BadImageError, load_rgb

logger = logging.getLogger(__name__)

LIST_SUFFIXES = frozenset({".txt", ".lst", ".csv"})

Transform = Callable[[Image.Image], Any]


class DataError(ValueError):
    """A data source that cannot be used; the message is meant for the end user."""


@dataclass(frozen=True)
class Skipped:
    """Returned by a dataset in place of a sample whose file could not be decoded."""

    path: str
    reason: str
    index: int


def list_images(source: str | os.PathLike[str]) -> list[Path]:
    """Image files under a folder (recursive, sorted) or listed in a .txt/.lst/.csv file.

    Raises:
        DataError: the source does not exist, is of an unknown kind, or yields no images.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"data path does not exist: {source}")
    if source.is_dir():
        paths = _walk_images(source)
        if not paths:
            looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"no images found under {source} (looked for {looked_for})")
        return paths
    if source.suffix.lower() in LIST_SUFFIXES:
        paths = _read_path_list(source)
        if not paths:
            raise DataError(f"no image paths listed in {source}")
        return paths
    raise DataError(f"data path {source} is neither a folder nor a path list (.txt, .lst or .csv)")


def _walk_images(root: Path) -> list[Path]:
    def on_error(err: OSError) -> None:
        logger.warning("skipping unreadable folder %s: %s", err.filename, err.strerror or err)

    # followlinks lets users assemble datasets from symlinked folders; remembering real
    # paths stops a link pointing at an ancestor from recursing forever.
    visited = {os.path.realpath(root)}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real in visited:
                logger.debug("not revisiting %s (already seen as %s)", name, real)
                continue
            visited.add(real)
            keep.append(name)
        dirnames[:] = keep
        found.extend(
            Path(dirpath, name) for name in filenames if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


def _read_path_list(list_file: Path) -> list[Path]:
    is_csv = list_file.suffix.lower() == ".csv"
    with open(list_file, newline="", encoding="utf-8-sig") as handle:
        if is_csv:
            rows = [row[0] if row else "" for row in csv.reader(handle)]
        else:
            rows = handle.read().splitlines()
    entries = [row.strip() for row in rows]
    entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if is_csv and entries and entries[0].lower() == "path":
        entries = entries[1:]
    return [_resolve_listed(entry, list_file) for entry in entries]


def _resolve_listed(entry: str, list_file: Path) -> Path:
    path = Path(entry).expanduser()
    return path if path.is_absolute() else list_file.parent / path


def load_or_skip(
    path: Path,
    index: int,
    transform: Transform | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Any:
    """``transform(image)`` (the RGB image when there is no transform) of one file, or a :class:`Skipped`
    record (path, reason, ``index``) when it cannot be decoded; never raises for a bad image. ``min_side``: the
    shorter side the transform needs, which lets a large JPEG be decoded at reduced size
    (:func:`openseer.data.images.load_rgb`)."""
    try:
        img = load_rgb(path, max_pixels=max_pixels, min_side=min_side)
    except BadImageError as err:
        return Skipped(path=err.path, reason=err.reason, index=index)
    return transform(img) if transform is not None else img


class UnlabelledImages(Dataset):
    """Images without labels, for self-supervised pretraining.

    ``dataset[i]`` is ``(transform(img), i)`` (``img`` when there is no transform), or a
    :class:`Skipped` record when the file cannot be decoded; it never raises for a bad image. ``min_side``: the
    shorter side the transform needs (:func:`load_or_skip`); None decodes every file whole.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        transform: Transform | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_side: int | None = None,
    ) -> None:
        if isinstance(source, (str, os.PathLike)):
            self.paths: list[Path] = list_images(source)
        else:
            self.paths = [Path(p) for p in source]
        self.transform = transform
        self.max_pixels = max_pixels
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int] | Skipped:
        sample = load_or_skip(self.paths[index], index, self.transform, self.max_pixels, self.min_side)
        return sample if isinstance(sample, Skipped) else (sample, index)


class LabelledImages(Dataset):
    """Images with integer class targets, for linear evaluation and fine-tuning.

    Attributes:
        paths: N image files.
        targets: (N,) int64 class indices into ``classes``.
        classes: class names, sorted.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        targets: Sequence[int] | torch.Tensor,
        classes: Sequence[str],
        transform: Transform | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.targets = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
        self.classes = list(classes)
        if len(self.paths) != len(self.targets):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} targets")
        self.transform = transform
        self.max_pixels = max_pixels

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike[str],
        transform: Transform | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> LabelledImages:
        """One sub-folder per class (``root/<class>/**/<image>``), classes sorted by name."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"data path does not exist: {root}")
        try:
            names, _ = find_classes(root)
        except FileNotFoundError:
            names = []
        # Tool folders such as .ipynb_checkpoints are not classes.
        classes = [name for name in names if not name.startswith(".")]
        if not classes:
            raise DataError(f"no class folders found under {root} (expected root/<class>/...)")
        paths: list[Path] = []
        targets: list[int] = []
        for target, name in enumerate(classes):
            found = list_images(root / name)
            paths += found
            targets += [target] * len(found)
        return cls(paths, targets, classes, transform=transform, max_pixels=max_pixels)

    @classmethod
    def from_csv(
        cls,
        csv_path: str | os.PathLike[str],
        transform: Transform | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> LabelledImages:
        """A CSV with header ``path,label`` (label is a class name); relative paths are
        resolved against the CSV's folder."""
        csv_path = Path(csv_path).expanduser()
        if not csv_path.is_file():
            raise DataError(f"data path does not exist: {csv_path}")
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {name.strip() for name in reader.fieldnames or []}
            if not {"path", "label"} <= columns:
                raise DataError(f"{csv_path} needs a header row with 'path' and 'label' columns")
            rows = [({k.strip(): (v or "").strip() for k, v in row.items() if k}) for row in reader]
        rows = [row for row in rows if row["path"]]
        if not rows:
            raise DataError(f"no images listed in {csv_path}")
        classes = sorted({row["label"] for row in rows})
        index = {name: i for i, name in enumerate(classes)}
        paths = [_resolve_listed(row["path"], csv_path) for row in rows]
        targets = [index[row["label"]] for row in rows]
        return cls(paths, targets, classes, transform=transform, max_pixels=max_pixels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int] | Skipped:
        sample = load_or_skip(self.paths[index], index, self.transform, self.max_pixels)
        return sample if isinstance(sample, Skipped) else (sample, int(self.targets[index]))


def collate_skipping(batch: list) -> tuple[torch.Tensor | None, torch.Tensor, list[Skipped]]:
    """DataLoader collate for datasets that return ``(tensor, int)`` or :class:`Skipped`: (stacked tensors (B, ...)
    or None when every item was skipped, the ints (B,), the skipped records)."""
    skipped = [item for item in batch if isinstance(item, Skipped)]
    good = [item for item in batch if not isinstance(item, Skipped)]
    if not good:
        return None, torch.empty(0, dtype=torch.long), skipped
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.long), skipped


def _class_indices(targets: torch.Tensor) -> list[torch.Tensor]:
    """Indices of each class in ascending class order; ``targets`` is (N,) integer."""
    if targets.ndim != 1 or targets.is_floating_point() or targets.is_complex():
        raise ValueError("targets must be a 1-D integer tensor")
    targets = targets.cpu()
    return [torch.nonzero(targets == c).flatten() for c in torch.unique(targets)]


def split_per_class(
    targets: torch.Tensor, holdout_fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified random split of ``targets`` (N,) into sorted (train_idx, heldout_idx).

    Each class of size n holds out round(n * fraction) samples, at least 1 when n > 1 and
    at most n - 1 so that every class stays in the training part.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    generator = torch.Generator().manual_seed(seed)
    held: list[torch.Tensor] = []
    for members in _class_indices(targets):
        n = len(members)
        k = 0 if n <= 1 else min(max(1, round(n * holdout_fraction)), n - 1)
        held.append(members[torch.randperm(n, generator=generator)[:k]])
    heldout = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.int64)
    mask = torch.ones(len(targets), dtype=torch.bool)
    mask[heldout] = False
    return torch.nonzero(mask).flatten(), heldout


def subset_per_class(
    targets: torch.Tensor,
    fraction: float | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Sorted indices of a class-balanced random subset of ``targets`` (N,).

    Give exactly one of ``fraction`` (each class keeps max(1, round(n * fraction))) or
    ``per_class`` (each class keeps min(per_class, n)); e.g. 1% / 10% low-shot labels.
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction or per_class")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    for members in _class_indices(targets):
        n = len(members)
        k = max(1, round(n * fraction)) if fraction is not None else per_class
        chosen.append(members[torch.randperm(n, generator=generator)[: min(k, n)]])
    if not chosen:
        return torch.empty(0, dtype=torch.int64)
    return torch.cat(chosen).sort().values


def has_class_folders(root: Path, paths: Sequence[Path]) -> bool:
    """Every image sits directly in one of at least two sub-folders (the ImageFolder layout)."""
    depths = [len(p.relative_to(root).parts) for p in paths]
    return all(d == 2 for d in depths) and len({p.relative_to(root).parts[0] for p in paths}) >= 2
