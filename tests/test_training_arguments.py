"""One config hierarchy: CheckpointArguments -> FinetuneConfig -> TBARConfig, TrainingArguments names,
trackers and the loss log."""

import json
import logging
from dataclasses import asdict

import pytest
import torch
from accelerate.tracking import GeneralTracker
from torch.utils.data import TensorDataset

from hf_tbar import TBARConfig
from hf_tbar.cli import parse_command
from hf_tbar.errors import ConfigError
from hf_tbar.training import FinetuneConfig, run_training
from hf_tbar.training import loop as loop_module
from hf_tbar.training.checkpoints import describe_run


def test_tbar_config_is_a_finetune_config_with_its_own_defaults_and_round_trips_through_json():
    config = TBARConfig(mode="lora", bf16=True, report_to="none")
    assert isinstance(config, FinetuneConfig) and (config.steps, config.batch_size) == (200, 32)
    assert (config.plateau_window, config.plateau_tolerance, config.variant) == (
        20,
        0.03,
        "repair-preserving",
    )
    assert config.learning_rate == 1e-3 and config.mixed_precision == "bf16" and config.report_to == []
    assert TBARConfig(**json.loads(json.dumps(asdict(config)))) == config
    plain = config.finetune_config(steps=5)
    assert type(plain) is FinetuneConfig and plain.steps == 5 and plain.mixed_precision == "bf16"


def test_the_cli_takes_the_training_arguments_names():
    argv = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--save_total_limit", "2", "--fp16"]
    _, _, config, *_ = parse_command("unlearn", [*argv, "--save_steps", "7", "--mode", "lora"])
    assert (config.steps, config.batch_size, config.keep_checkpoints, config.checkpoint_steps) == (3, 4, 2, 7)
    assert config.mixed_precision == "fp16" and config.mode == "lora"
    with pytest.raises(SystemExit):  # a Literal choice: argparse refuses another value
        parse_command("unlearn", ["--mode", "qlora"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bf16": True, "fp16": True}, "--bf16 contradicts"),
        ({"fp16": True, "mixed_precision": "bf16"}, "--fp16 contradicts mixed_precision 'bf16'"),
        ({"logging_steps": 0}, "logging_steps must be a positive int, got 0"),
        ({"report_to": ["tensorbored"]}, r"unknown tracker\(s\) \['tensorbored'\]"),
    ],
)
def test_bad_training_arguments_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(**kwargs)


class Recorder(GeneralTracker):
    """An in-memory experiment tracker."""

    name = "recorder"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.logged = []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        pass

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, dict(values)))


def _train(config: FinetuneConfig) -> list[float]:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    data = TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
    loss = lambda m, batch: torch.nn.functional.cross_entropy(m(batch[0]), batch[1])  # noqa: E731
    return run_training(module, list(module.parameters()), data, loss, config, desc="toy run")


def test_the_loss_goes_to_the_log_and_to_the_trackers_every_logging_steps(monkeypatch, caplog):
    recorder = Recorder()
    monkeypatch.setattr(
        loop_module, "_tracking", lambda config: {"log_with": [recorder]} if config.report_to else {}
    )
    with caplog.at_level(logging.INFO, logger="hf_tbar.training.loop"):
        losses = _train(FinetuneConfig(steps=5, batch_size=4, logging_steps=2, report_to=["tensorboard"]))
    assert [step for step, _ in recorder.logged] == [2, 4, 5]
    assert (
        recorder.logged[0][1]["loss"] == pytest.approx(losses[1]) and "learning_rate" in recorder.logged[0][1]
    )
    assert "toy run: step 4/5, loss" in caplog.text


def test_a_tracker_that_is_not_installed_is_named_and_logging_does_not_change_the_fingerprint():
    with pytest.raises(ConfigError, match="report_to: wandb is not installed"):
        _train(FinetuneConfig(steps=1, batch_size=4, report_to=["wandb"]))
    module, data = torch.nn.Linear(3, 2), TensorDataset(torch.randn(4, 3))
    one = describe_run(FinetuneConfig(logging_steps=1), module, data, 1)
    other = describe_run(FinetuneConfig(logging_steps=7, report_to=["tensorboard"]), module, data, 1)
    assert one == other and describe_run(FinetuneConfig(seed=1), module, data, 1) != one


def test_fine_tuning_stops_once_the_loss_plateaus_and_not_before():
    from hf_tbar.training.loop import plateaued

    # pure rule: two windows of 3 steps; a fall of 10% continues, 1% stops, a tiny loss stops
    assert not plateaued([1.0, 1.0, 1.0, 0.9, 0.9, 0.9], window=3, tolerance=0.05, min_loss=0.0)
    assert plateaued([1.0, 1.0, 1.0, 0.99, 0.99, 0.99], window=3, tolerance=0.05, min_loss=0.0)
    assert plateaued([0.5, 0.5, 0.5, 0.004, 0.004, 0.004], window=3, tolerance=0.05, min_loss=0.01)
    assert not plateaued([0.1] * 5, window=3, tolerance=0.05, min_loss=0.0)  # fewer than two windows
    assert not plateaued([0.1] * 50, window=0, tolerance=0.05, min_loss=0.0)  # 0: off

    settings = {"steps": 150, "batch_size": 16, "learning_rate": 0.5, "report_to": []}
    stopped = _train(FinetuneConfig(**settings, plateau_window=5))
    assert 10 <= len(stopped) < 150 and plateaued(stopped, 5, 0.05, 0.01)
    assert len(_train(FinetuneConfig(**settings))) == 150  # the default of a plain FinetuneConfig: every step
    # a stopped run is the same run as far as it went
    assert _train(FinetuneConfig(**settings))[: len(stopped)] == stopped
