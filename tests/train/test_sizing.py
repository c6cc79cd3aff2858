"""The 'auto' values sized from the data (openseer.train.sizing), on hand-made counts of images and processes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openseer.config import ConfigError, load_config, preset_names
from openseer.data.folders import DataError
from openseer.models import build_model
from openseer.train.config import PretrainConfig
from openseer.train.sizing import (
    AUTO_KEYS,
    AUTO_STEPS,
    MAX_PROTOTYPES,
    MIN_PROTOTYPES,
    MIN_STEPS_PER_EPOCH,
    QUEUE_START_SHARE,
    ROWS_PER_PROTOTYPE,
    auto_keys,
    size_run,
)


def _photos(*overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, ["photos"], list(overrides))


def _reasons(reasons: list[str]) -> dict[str, str]:
    """``key=value: why`` lines by key; each key once."""
    keys = [line.split("=", 1)[0] for line in reasons]
    assert len(keys) == len(set(keys)), reasons
    return dict(zip(keys, reasons, strict=True))


def test_a_folder_of_245_photos_is_sized_not_refused() -> None:
    cfg = _photos()
    assert set(auto_keys(cfg)) == set(AUTO_KEYS)
    sized = size_run(cfg, 245)
    c = sized.cfg
    assert c.optim.batch_size == 30  # 245 // 8: eight full batches an epoch
    assert 245 // c.optim.batch_size == MIN_STEPS_PER_EPOCH
    assert c.optim.epochs == 250 and c.optim.planned_steps(8) == AUTO_STEPS
    assert c.model.prototypes == MIN_PROTOTYPES
    # 30 rows are too few for 30 prototypes: one global batch more makes 60 >= 1.37 x 30
    assert c.swav.queue_length == 30 and c.swav.local_queue_length(30, 1) == 30
    assert c.swav.queue_start_epoch == pytest.approx(QUEUE_START_SHARE * 250)
    assert auto_keys(c) == []
    reasons = _reasons(sized.reasons)
    assert list(reasons) == list(AUTO_KEYS)  # one line per sized value, in order
    for key, line in reasons.items():
        section, name = key.split(".")
        assert line.startswith(f"{key}={getattr(getattr(c, section), name):g}: ")
    assert "8 full global batches of 30" in reasons["optim.batch_size"]
    assert "SwAV Sec. 4.3" in reasons["swav.queue_length"]
    assert cfg.optim.batch_size == "auto"  # the config given is left as it was


def test_a_large_folder_takes_the_largest_batch_and_a_queue_for_its_prototypes() -> None:
    c = size_run(_photos(), 100_000).cfg
    assert c.optim.batch_size == 64 == c.optim.max_batch_size
    assert c.model.prototypes == 250  # one per 400 images
    rows = 64 + c.swav.queue_length
    assert c.swav.queue_length % 64 == 0 and rows >= ROWS_PER_PROTOTYPE * 250 > rows - 64  # the fewest batches
    assert c.optim.epochs == pytest.approx(1.28)  # about 2000 steps of 1562 batches
    budgeted = size_run(_photos("run.budget_minutes=20"), 100_000)
    assert budgeted.cfg.optim.epochs == c.optim.epochs  # the budget bounds the run; the epochs place the queue
    assert "run.budget_minutes=20 bounds the run" in _reasons(budgeted.reasons)["optim.epochs"]


def test_several_processes_share_the_batch_and_the_queue_is_whole_global_batches() -> None:
    c = size_run(_photos(), 100_000, world_size=4).cfg
    assert c.optim.batch_size == 64  # per process
    assert c.swav.queue_length % 256 == 0 and 256 + c.swav.queue_length >= ROWS_PER_PROTOTYPE * 250
    small = size_run(_photos(), 245, world_size=2).cfg
    assert small.optim.batch_size == 15 and 245 // (2 * 15) == MIN_STEPS_PER_EPOCH


def test_the_queue_never_holds_more_rows_than_images_and_auto_prototypes_then_come_down() -> None:
    fixed = size_run(_photos("model.prototypes=100", "optim.batch_size=16"), 50)
    assert fixed.cfg.swav.queue_length == 32 and fixed.cfg.model.prototypes == 100  # 16 + 32 <= 50 images
    assert "as many as 50 images allow" in _reasons(fixed.reasons)["swav.queue_length"]
    no_queue = size_run(_photos("swav.queue_length=0"), 100_000)
    assert no_queue.cfg.model.prototypes == math.floor(64 / ROWS_PER_PROTOTYPE)  # prototypes for the batch
    assert "what the 64 rows" in _reasons(no_queue.reasons)["model.prototypes"]
    big = size_run(_photos("optim.max_batch_size=4096"), 10_000_000).cfg
    assert big.model.prototypes == MAX_PROTOTYPES and big.swav.queue_length == 0


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 300_000),
    world=st.sampled_from([1, 2, 3, 8]),
    most=st.integers(2, 512),
)
def test_sizing_invariants(n: int, world: int, most: int) -> None:
    if n < 2 * world:
        with pytest.raises(DataError, match="at least 2 per process"):
            size_run(_photos(), n, world)
        return
    c = size_run(_photos(f"optim.max_batch_size={most}"), n, world).cfg
    b = c.optim.batch_size
    g = b * world
    assert 2 <= b <= max(2, most) and n // g >= 1
    assert n // g >= MIN_STEPS_PER_EPOCH or b == 2  # small folders: as many batches as a batch of 2 leaves
    assert c.optim.planned_steps(n // g) >= min(AUTO_STEPS * 0.99, n // g)
    assert 2 <= c.model.prototypes <= MAX_PROTOTYPES and c.model.prototypes <= max(2, n // 4)
    q = c.swav.queue_length
    assert q % g == 0 and g + q <= max(n, g)
    rows = g + q
    assert rows >= ROWS_PER_PROTOTYPE * c.model.prototypes or c.model.prototypes == 2 or g + q + g > n
    assert 0 <= c.swav.queue_start_epoch <= c.optim.epochs


def test_too_few_images_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="1 training image: pretraining needs at least 2 per process"):
        size_run(_photos(), 1)
    with pytest.raises(DataError, match=r"at least 2 per process \(2 processes\)"):
        size_run(_photos(), 3, world_size=2)
    assert size_run(_photos(), 2).cfg.optim.batch_size == 2


def test_a_resumed_run_keeps_what_it_sized_when_it_started() -> None:
    started = size_run(_photos(), 245).cfg
    resumed = size_run(_photos(), 1000, previous=started)  # the folder has grown since
    assert {k: _value(resumed.cfg, k) for k in AUTO_KEYS} == {k: _value(started, k) for k in AUTO_KEYS}
    assert all("as this run sized it when it started" in line for line in resumed.reasons)
    explicit = size_run(_photos("optim.batch_size=20"), 1000, previous=started).cfg
    assert explicit.optim.batch_size == 20  # a number given now wins over the start's


def _value(cfg: PretrainConfig, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


@pytest.mark.parametrize("name", [p for p in preset_names() if not p.startswith("photos")])
def test_presets_with_numbers_are_left_as_they_are(name: str) -> None:
    cfg = load_config(PretrainConfig, [name])
    assert auto_keys(cfg) == [] and size_run(cfg, 245) == size_run(cfg, 245) and size_run(cfg, 245).cfg is cfg
    assert auto_keys(PretrainConfig()) == []


def test_an_auto_value_is_a_typed_config_value() -> None:
    cfg = load_config(PretrainConfig, [], ["optim.batch_size=auto", "model.prototypes=auto"])
    assert cfg.optim.batch_size == "auto" and cfg.model.prototypes == "auto"
    with pytest.raises(ConfigError, match="optim.batch_size.*'auto'"):
        load_config(PretrainConfig, [], ["optim.batch_size=automatic"])
    with pytest.raises(ConfigError, match="optim.max_batch_size"):
        load_config(PretrainConfig, [], ["optim.max_batch_size=1"])
    # only pretraining sizes them: elsewhere an unsized value is an error that names the key
    with pytest.raises(ConfigError, match="config key 'optim.batch_size' is 'auto'"):
        cfg.optim.lr_scale(1)
    with pytest.raises(ConfigError, match="config key 'model.prototypes' is 'auto'"):
        build_model(cfg.model)
    with pytest.raises(ConfigError, match="config key 'optim.epochs' is 'auto'"):
        _photos().optim.planned_steps(10)
