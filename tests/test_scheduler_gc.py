"""``corral scheduler`` raises the collector's young threshold (``collector.tune``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from corral.scheduler import collector


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


@pytest.mark.usefixtures("thresholds")
def test_tune_raises_the_young_threshold_and_keeps_the_others():
    gc.set_threshold(700, 10, 10)
    collector.tune()
    assert gc.get_threshold() == (collector.YOUNG, 10, 10)


@pytest.mark.usefixtures("thresholds")
@pytest.mark.parametrize("young", [0, 10 * collector.YOUNG])
def test_tune_keeps_a_threshold_the_process_owner_chose(young):
    gc.set_threshold(young, 10, 10)  # 0: automatic collection off
    collector.tune()
    assert gc.get_threshold() == (young, 10, 10)


@pytest.mark.usefixtures("thresholds")
def test_the_scheduler_command_tunes_the_collector(monkeypatch):
    from click.testing import CliRunner

    from corral.cli import scheduler
    from corral.cli.common import main

    seen = []

    def run_command(coroutine):  # stands in for serving: note the thresholds, start nothing
        coroutine.close()
        seen.append(gc.get_threshold()[0])

    monkeypatch.setattr(scheduler, "run_command", run_command)
    gc.set_threshold(700, 10, 10)
    result = CliRunner().invoke(main, ["scheduler", "--no-auth"])
    assert result.exit_code == 0, result.output
    assert seen == [collector.YOUNG]
