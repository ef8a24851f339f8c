"""The wandb logger needs no account or network: offline by default, offline fallback when online fails."""

import time

import pytest

from efmom.loggers import WandbLogger

from test_train import SHRINK, only_record, run_train


def test_wandb_offline_run_written(tmp_path):
    run_train(tmp_path, "experiment=quickstart", *SHRINK, "logger=wandb")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))
    assert only_record(tmp_path).status == "completed"


@pytest.mark.slow
def test_wandb_online_without_server_goes_offline(tmp_path, monkeypatch):
    # A closed port on this machine plays the part of an unreachable wandb server.
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    logger = WandbLogger(mode="online", init_timeout=5)
    started = time.monotonic()
    logger.start("test", {"seed": 1}, str(tmp_path))
    assert time.monotonic() - started < 60
    assert logger.run.settings.mode == "offline"
    logger.log({"loss": 1.0}, step=0)
    logger.finish()
    assert logger.run is None
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("options, message", [
    ({"mode": "sometimes"}, "logger.mode must be one of ('offline', 'online', 'disabled'), got 'sometimes'"),
    ({"init_timeout": 0}, "logger.init_timeout must be a number of seconds > 0, got 0"),
])
def test_wandb_bad_options(options, message):
    with pytest.raises(ValueError) as caught:
        WandbLogger(**options)
    assert str(caught.value) == message
