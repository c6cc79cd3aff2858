"""benchmarks/decode.py end to end on a few generated photos: the last line names both decode rates, their ratio,
the extrapolated cache fill and the CPU; --upscale writes its enlarged photos once."""

from __future__ import annotations

from PIL import Image
from support.benchmarks import benchmark_module
from support.photos import photo_jpeg


def test_the_last_line_has_both_rates_the_ratio_and_the_fill(tmp_path, cache_dir, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        photo_jpeg(folder / f"{i}.jpg", 300 + 7 * i, 200, seed=i)
    (folder / "broken.jpg").write_bytes(b"not a photo")
    bench = benchmark_module("decode")
    line = bench.main([str(folder), "--size", "32", "--rounds", "1", "--threads", "1"])
    figures = dict(pair.split("=", 1) for pair in line.split())
    assert set(figures) == {
        "decode_draft_imgs_per_s",
        "decode_full_imgs_per_s",
        "ratio",
        "cache_fill_10k_s",
        "cpu",
    }
    draft, full = float(figures["decode_draft_imgs_per_s"]), float(figures["decode_full_imgs_per_s"])
    assert draft > 0 and full > 0 and abs(float(figures["ratio"]) - draft / full) < 0.01
    assert float(figures["cache_fill_10k_s"]) > 0 and " " not in figures["cpu"]
    out = capsys.readouterr().out
    assert "extrapolated from 6 photos" in out and "(1 skipped)" in out and out.rstrip().endswith(line)

    bench.main([str(folder), "--size", "32", "--rounds", "1", "--sample", "2", "--upscale", "2"])
    (enlarged,) = (cache_dir / "benchmark-photos").iterdir()
    files = sorted(enlarged.iterdir())
    assert len(files) == 2 and Image.open(files[0]).size == (600, 400)
    assert [
        p.name for p in (cache_dir).iterdir() if p.name != "benchmark-photos"
    ] == []  # the fill's folder went
