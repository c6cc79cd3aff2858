"""load_rgb: every colour mode to 8-bit RGB, every broken file to BadImageError; JPEGs decoded at reduced size
never below the size asked for, and close to the full decode resampled alike."""

from __future__ import annotations

import contextlib
import io
import pickle
import signal
import struct
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support.photos import MEAN_TOLERANCE, P99_TOLERANCE, photo_jpeg, synthetic_photo
from torchvision.transforms import RandomResizedCrop

from openseer.data.images import (
    IMAGE_EXTENSIONS,
    BadImageError,
    SkipLog,
    crop_source_side,
    load_rgb,
    load_rgb_reduced,
)


def _pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def test_extensions_are_lower_case_suffixes():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} == IMAGE_EXTENSIONS


def test_rgb_passes_through(tmp_path):
    src = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = load_rgb(_save(Image.fromarray(src), tmp_path / "a.png"))
    assert img.size == (7, 5)
    np.testing.assert_array_equal(_pixels(img), src)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_gray_and_bilevel(tmp_path, mode):
    value = 100 if mode == "L" else 255
    img = load_rgb(_save(Image.new(mode, (3, 2), value), tmp_path / "g.png"))
    assert (_pixels(img) == (value if mode == "L" else 255)).all()


def test_rgba_composited_on_white(tmp_path):
    src = np.array([[[255, 0, 0, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    out = _pixels(load_rgb(_save(Image.fromarray(src, "RGBA"), tmp_path / "a.png")))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [10, 20, 30])
    assert np.abs(out[0, 2].astype(int) - 127).max() <= 1


def test_la_composited_on_white(tmp_path):
    src = np.array([[[0, 0], [50, 255]]], dtype=np.uint8)
    out = _pixels(load_rgb(_save(Image.fromarray(src, "LA"), tmp_path / "a.png")))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [50, 50, 50]])


def test_palette_with_and_without_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    opaque = _pixels(load_rgb(_save(img, tmp_path / "p.png")))
    np.testing.assert_array_equal(opaque[0], [[0, 0, 0], [200, 10, 20]])
    clear = _pixels(load_rgb(_save(img, tmp_path / "t.png", transparency=0)))
    np.testing.assert_array_equal(clear[0], [[255, 255, 255], [200, 10, 20]])
    gif = _pixels(load_rgb(_save(img, tmp_path / "t.gif", transparency=0)))
    np.testing.assert_array_equal(gif[0], [[255, 255, 255], [200, 10, 20]])


def test_cmyk(tmp_path):
    src = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    out = _pixels(load_rgb(_save(Image.fromarray(src, "CMYK"), tmp_path / "c.tif")))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 255, 255], [0, 0, 0]])


SIXTEEN = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
SIXTEEN_AS_8 = [0, 1, 128, 255]


def test_16bit_png_scaled_not_clipped(tmp_path):
    path = _save(Image.fromarray(SIXTEEN), tmp_path / "d.png")
    assert Image.open(path).mode in {"I;16", "I"}
    np.testing.assert_array_equal(_pixels(load_rgb(path))[0, :, 0], SIXTEEN_AS_8)


def test_16bit_big_endian_tiff(tmp_path):
    img = Image.frombytes("I;16B", (4, 1), SIXTEEN.astype(">u2").tobytes())
    path = _save(img, tmp_path / "b.tif")
    assert Image.open(path).mode == "I;16B"
    np.testing.assert_array_equal(_pixels(load_rgb(path))[0, :, 0], SIXTEEN_AS_8)


def test_32bit_int_tiff(tmp_path):
    path = _save(Image.fromarray(SIXTEEN.astype(np.int32), "I"), tmp_path / "i.tif")
    np.testing.assert_array_equal(_pixels(load_rgb(path))[0, :, 0], SIXTEEN_AS_8)
    signed = np.array([[-100, 0, 155]], dtype=np.int32)  # outside 16 bits: min-max scaled
    path = _save(Image.fromarray(signed, "I"), tmp_path / "s.tif")
    np.testing.assert_array_equal(_pixels(load_rgb(path))[0, :, 0], [0, 100, 255])


def test_float_tiff(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = _pixels(load_rgb(_save(Image.fromarray(unit, "F"), tmp_path / "f.tif")))
    np.testing.assert_array_equal(out[0, :, 1], [0, 128, 255])


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animated_first_frame(tmp_path, suffix):
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    assert Image.open(path).n_frames == 2
    out = _pixels(load_rgb(path))
    assert out[..., 0].min() > 200 and out[..., 2].max() < 50


def test_exif_orientation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees
    path = _save(Image.new("RGB", (40, 20), "white"), tmp_path / "o.jpg", exif=exif)
    assert Image.open(path).size == (40, 20)
    assert load_rgb(path).size == (20, 40)


# ============ reduced-size decoding of JPEGs ============


def _scale(short: int, min_side: int) -> int:
    """The reduction the contract promises: the largest of 1, 2, 4, 8 that keeps the shorter side >= min_side."""
    return max(f for f in (1, 2, 4, 8) if f == 1 or f * min_side <= short)


@pytest.mark.parametrize(("width", "height"), [(1001, 757), (757, 1001), (640, 480), (333, 2011), (97, 61)])
@pytest.mark.parametrize("min_side", [1, 47, 96, 120, 160, 300])
def test_reduced_decode_never_goes_below_min_side(tmp_path, width, height, min_side):
    path = _save(Image.new("RGB", (width, height), (90, 120, 150)), tmp_path / "flat.jpg")
    reduced = load_rgb_reduced(path, min_side=min_side)
    f = _scale(min(width, height), min_side)
    assert reduced.image.size == (-(-width // f), -(-height // f)) and reduced.image.mode == "RGB"
    assert min(reduced.image.size) >= min(min_side, width, height)
    assert reduced.size == (width, height) and reduced.box == (0, 0, width / f, height / f)
    assert load_rgb(path, min_side=min_side).size == reduced.image.size


def test_only_jpegs_are_reduced_and_none_means_whole(tmp_path):
    picture = synthetic_photo(400, 300)
    for name in ("a.png", "a.webp", "a.bmp"):
        path = _save(picture, tmp_path / name)
        reduced = load_rgb_reduced(path, min_side=40)
        assert reduced.image.size == (400, 300) and reduced.box == (0, 0, 400, 300)
        np.testing.assert_array_equal(_pixels(reduced.image), _pixels(load_rgb(path)))
    jpeg = _save(picture, tmp_path / "a.jpg", quality=90)
    assert load_rgb(jpeg).size == load_rgb(jpeg, min_side=None).size == (400, 300)
    assert load_rgb(jpeg, min_side=40).size == (100, 75)  # 1/8 would leave 38 < 40 px
    with pytest.raises(ValueError):
        load_rgb(jpeg, min_side=0)


def _shrink(img: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR, box=box), dtype=np.int16)


def _differences(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    error = np.abs(reference - other)
    return float(error.mean()), float(np.percentile(error, 99))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("width", "height", "min_side"), [(1007, 591, 140), (2047, 1535, 180), (600, 800, 150)]
)
def test_reduced_decode_matches_the_full_decode_in_every_orientation(
    tmp_path, orientation, width, height, min_side
):
    """Stored sizes that are not multiples of the reduction leave a partly covered last column and row, which
    the EXIF flips move to the other side: the box follows them, so both decodes show the same area (and a box
    with them on the wrong side does worse)."""
    path = photo_jpeg(tmp_path / "p.jpg", width, height, seed=width + orientation, orientation=orientation)
    full, reduced = load_rgb_reduced(path), load_rgb_reduced(path, min_side=min_side)
    swapped = orientation >= 5
    assert full.size == reduced.size == ((height, width) if swapped else (width, height)) == full.image.size
    assert min(reduced.image.size) >= min_side and max(reduced.image.size) < max(full.size) // 2
    k = min_side / min(full.size)
    target = (round(full.size[0] * k), round(full.size[1] * k))
    expected = _shrink(full.image, full.box, target)
    mean, p99 = _differences(expected, _shrink(reduced.image, reduced.box, target))
    assert mean <= MEAN_TOLERANCE and p99 <= P99_TOLERANCE, (mean, p99)
    # the partial pixels sit on one side of each axis: the box on the other side shows a shifted picture
    left, top, right, bottom = reduced.box
    w, h = reduced.image.size
    for other in ((w - right, top, w - left, bottom), (left, h - bottom, right, h - top)):
        if other != reduced.box:
            assert mean < _differences(expected, _shrink(reduced.image, other, target))[0]


_JPEG_KINDS = {
    "grey": lambda img, path: img.convert("L").save(path, quality=90),
    "cmyk": lambda img, path: img.convert("CMYK").save(path, quality=90),
    "progressive": lambda img, path: img.save(path, quality=90, progressive=True),
    "no chroma subsampling": lambda img, path: img.save(path, quality=90, subsampling=0),
    # cameras' multi-picture files, named .jpg like the others
    "mpo": lambda img, path: img.save(path, format="MPO", save_all=True, append_images=[img.rotate(90)]),
}


@pytest.mark.parametrize("kind", sorted(_JPEG_KINDS))
def test_reduced_decode_of_other_jpeg_kinds(tmp_path, kind):
    path = tmp_path / "k.jpg"
    _JPEG_KINDS[kind](synthetic_photo(640, 480, seed=3), path)
    full, reduced = load_rgb_reduced(path), load_rgb_reduced(path, min_side=100)
    assert reduced.image.mode == "RGB" and reduced.image.size == (160, 120)
    mean, p99 = _differences(
        _shrink(full.image, full.box, (133, 100)), _shrink(reduced.image, reduced.box, (133, 100))
    )
    assert mean <= MEAN_TOLERANCE and p99 <= P99_TOLERANCE, (mean, p99)


def test_reduced_decode_keeps_the_checks(tmp_path):
    path = photo_jpeg(tmp_path / "whole.jpg", 800, 600)
    data = path.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert _reason_for(tmp_path / "cut.jpg", min_side=50) == "truncated file"
    # the pixel limit is the file's full size, checked before anything is decoded
    assert (
        _reason_for(path, min_side=50, max_pixels=800 * 600 - 1)
        == "decompression bomb: 480000 pixels > limit"
    )
    assert load_rgb(path, min_side=50, max_pixels=800 * 600).size == (100, 75)


def test_bytes_decode_as_their_file_does(tmp_path):
    """A file's bytes held in memory (a sample of a tar shard) go through the same decoder, reduced alike."""
    path = photo_jpeg(tmp_path / "p.jpg", 1200, 900, seed=2, orientation=6)
    data = path.read_bytes()
    for min_side in (None, 100):
        from_file, from_bytes = load_rgb_reduced(path, min_side=min_side), load_rgb_reduced(data, min_side=min_side)
        assert from_file.size == from_bytes.size == (900, 1200) and from_file.box == from_bytes.box
        np.testing.assert_array_equal(_pixels(from_file.image), _pixels(from_bytes.image))
    reduced = load_rgb(data, min_side=100)
    assert min(reduced.size) >= 100 and max(reduced.size) <= 1200 // 4  # through the draft
    with pytest.raises(BadImageError) as err:
        load_rgb(b"", name="shard-000000.tar:000000001")
    assert (err.value.path, err.value.reason) == ("shard-000000.tar:000000001", "empty file")
    with pytest.raises(BadImageError, match="<bytes>: not an image"):
        load_rgb(b"not an image at all")
    with pytest.raises(BadImageError, match="truncated file"):
        load_rgb(data[: len(data) // 2], min_side=100)
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_rgb(data, max_pixels=1000)


def test_crop_source_side_keeps_every_random_resized_crop_at_its_size():
    assert crop_source_side(224, 0.14) == 692  # SwAV's global crops
    assert crop_source_side(96, 0.05) == 496  # and its local ones
    assert crop_source_side(96, 1.0, 1.0) == 96
    torch.manual_seed(0)
    for size, scale in [(224, (0.14, 1.0)), (96, (0.05, 0.14)), (96, (0.25, 1.0))]:
        side = crop_source_side(size, scale[0])
        for aspect in (1.0, 4 / 3, 3.0, 0.2):
            shape = (side, round(side * aspect)) if aspect >= 1 else (round(side / aspect), side)
            image = torch.empty((3, *shape))
            crops = [RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(500)]
            assert min(min(h, w) for _, _, h, w in crops) >= size
        # the check can fail: a square of half that side does give crops smaller than the output
        small = torch.empty((3, side // 2, side // 2))
        smaller = [RandomResizedCrop.get_params(small, list(scale), [3 / 4, 4 / 3]) for _ in range(200)]
        assert min(min(h, w) for _, _, h, w in smaller) < size
    with pytest.raises(ValueError):
        crop_source_side(96, 0.0)


def test_random_crops_of_a_reduced_decode_match_those_of_the_full_decode(tmp_path):
    """The loader's bound: at ``min_side = crop_source_side``, the smallest crop of the reduced decode resamples
    to the same pixels as that crop of the full decode, within the reduced decode's tolerance."""
    size, min_scale = 96, 0.14
    path = photo_jpeg(tmp_path / "p.jpg", 2400, 1800, seed=5, orientation=6)
    full, reduced = load_rgb_reduced(path), load_rgb_reduced(path, min_side=crop_source_side(size, min_scale))
    assert min(reduced.image.size) >= crop_source_side(size, min_scale) > min(full.image.size) // 8
    width, height = full.size
    kx, ky = (reduced.box[2] - reduced.box[0]) / width, (reduced.box[3] - reduced.box[1]) / height
    torch.manual_seed(1)
    for _ in range(5):
        top, left, h, w = RandomResizedCrop.get_params(
            torch.empty(3, height, width), [min_scale, min_scale], [0.75, 0.75]
        )
        crop = (left, top, left + w, top + h)
        mapped = (
            reduced.box[0] + crop[0] * kx,
            reduced.box[1] + crop[1] * ky,
            reduced.box[0] + crop[2] * kx,
            reduced.box[1] + crop[3] * ky,
        )
        assert min(mapped[2] - mapped[0], mapped[3] - mapped[1]) >= size
        mean, p99 = _differences(
            _shrink(full.image, crop, (size, size)), _shrink(reduced.image, mapped, (size, size))
        )
        assert mean <= MEAN_TOLERANCE and p99 <= P99_TOLERANCE, (mean, p99)


def test_one_by_one_is_a_valid_image(tmp_path):
    img = load_rgb(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "tiny.png"))
    assert img.size == (1, 1) and img.getpixel((0, 0)) == (1, 2, 3)


def _reason_for(path: Path, **kwargs) -> str:
    with pytest.raises(BadImageError) as info:
        load_rgb(path, **kwargs)
    assert info.value.path == str(path)
    assert info.value.reason
    return info.value.reason


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert _reason_for(path) == "truncated file"


def test_empty_text_missing_and_directory(tmp_path):
    (tmp_path / "empty.jpg").touch()
    assert _reason_for(tmp_path / "empty.jpg") == "empty file"
    (tmp_path / "notes.jpg").write_text("these are not pixels\n")
    assert _reason_for(tmp_path / "notes.jpg") == "not an image"
    assert _reason_for(tmp_path / "missing.png") == "file not found"
    (tmp_path / "dir.png").mkdir()
    assert _reason_for(tmp_path / "dir.png") == "is a directory"


def test_png_header_then_garbage(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    _reason_for(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_huge_declared_size_is_a_bomb(tmp_path):
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )
    assert path.stat().st_size < 200
    assert _reason_for(path) == "decompression bomb: 900000000 pixels > limit"
    # Below PIL's own limit, our per-call limit still applies before decoding.
    assert _reason_for(path, max_pixels=10**6).startswith("decompression bomb: 900000000")


def test_max_pixels_does_not_touch_global_limit(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    path = _save(Image.new("RGB", (20, 20)), tmp_path / "a.png")
    assert _reason_for(path, max_pixels=100) == "decompression bomb: 400 pixels > limit"
    assert Image.MAX_IMAGE_PIXELS == before
    assert load_rgb(path, max_pixels=400).size == (20, 20)


def test_permission_denied(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "locked.png")

    def refuse(*args, **kwargs):  # chmod cannot lock out root, so refuse the open directly
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    assert _reason_for(path) == "permission denied"


def test_bad_image_error_pickles():
    err = pickle.loads(pickle.dumps(BadImageError("/x.jpg", "truncated file")))
    assert (err.path, err.reason) == ("/x.jpg", "truncated file")


_SIGNATURES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"RIFF",
    b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    b"RIFF\x24\x00\x00\x00WEBPVP8L",
]
# A slow decode fails the deadline; a decoder that never returns is interrupted by the watchdog. Both are generous,
# as the suite shares its machine; a healthy decode of these few hundred bytes takes milliseconds.
_DEADLINE = timedelta(seconds=10)
_HANG_S = 30.0


class _Hang(BaseException):
    """Raised by the watchdog; a BaseException, so that load_rgb cannot turn it into a BadImageError."""


@contextlib.contextmanager
def _watchdog(seconds: float):  # noqa: ANN202 - a context manager
    def fire(signum: int, frame: object) -> None:
        raise _Hang(f"load_rgb did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _decodes_or_reports(path: Path, **kwargs) -> None:
    with _watchdog(_HANG_S):
        try:
            img = load_rgb(path, **kwargs)
        except BadImageError as err:
            assert err.reason
        else:
            assert img.mode == "RGB" and min(img.size) > 0


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the junk it reads
@settings(max_examples=50, deadline=_DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(_SIGNATURES), body=st.binary(max_size=600))
def test_random_bytes_only_ever_raise_bad_image_error(tmp_path_factory, prefix, body):
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "x.img"
    path.write_bytes(prefix + body)
    _decodes_or_reports(path)


def _valid_files() -> dict[str, bytes]:
    """Small real files of each format the loader is most often fed, to be cut and damaged."""
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    frames = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    out = {}
    for name, fmt, kwargs in [
        ("jpeg", "JPEG", {"quality": 90}),
        ("progressive-jpeg", "JPEG", {"progressive": True}),
        ("png", "PNG", {}),
        ("gif", "GIF", {"save_all": True, "append_images": frames[1:]}),
        ("webp", "WEBP", {"quality": 80}),
        ("webp-lossless", "WEBP", {"lossless": True}),
    ]:
        buffer = io.BytesIO()
        img.save(buffer, format=fmt, **kwargs)
        out[name] = buffer.getvalue()
    return out


_VALID = _valid_files()


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=80, deadline=_DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(_VALID)),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), max_size=4),
    tail=st.binary(max_size=200),
    min_side=st.sampled_from([None, 1, 3]),
)
def test_damaged_real_files_only_ever_raise_bad_image_error(
    tmp_path_factory, name, cut, flips, tail, min_side
):
    """Valid JPEG/PNG/GIF/WebP files, cut short, with a few bytes overwritten and junk appended: headers and
    magic numbers are real, so the decoders go deep before they meet the damage (also with JPEG's DCT scaling)."""
    data = bytearray(_VALID[name][: max(1, round(cut * len(_VALID[name])))])
    for where, value in flips:
        data[int(where * len(data))] = value
    path = tmp_path_factory.mktemp("damaged", numbered=True) / "x.img"
    path.write_bytes(bytes(data) + tail)
    # a damaged header may declare any size: keep memory small; JPEGs may also be decoded at reduced size
    _decodes_or_reports(path, max_pixels=1 << 22, min_side=min_side)


def test_skip_log_counts_summarises_and_pickles():
    log = SkipLog()
    log.add(Path("/a.jpg"), "truncated file")
    other = SkipLog()
    other.add("/b.jpg", "not an image")
    other.add("/c.jpg", "truncated file")
    log.extend(other)
    log.extend([("/d.jpg", "empty file")])
    assert len(log) == log.count == 4
    assert log.by_reason() == {"truncated file": 2, "not an image": 1, "empty file": 1}
    summary = log.summary(max_items=2)
    first, *rest = summary.splitlines()
    assert first == "skipped 4 files: 2 truncated file, 1 not an image, 1 empty file"
    assert rest[:2] == ["  /a.jpg: truncated file", "  /b.jpg: not an image"]
    assert "2 more" in rest[-1]
    assert pickle.loads(pickle.dumps(log)) == log
    assert SkipLog().summary() == "skipped 0 files"
