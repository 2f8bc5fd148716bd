"""The GPU path's two settings, exercised on the CPU: mixed precision (bfloat16 autocast; float16 with loss
scaling) through the real training loop, distances kept in float32 inside autocast, and banks kept on the
training device."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from fewshot.checkpoint import load_checkpoint
from fewshot.config.loading import load_config
from fewshot.config.schema import ExperimentConfig, PretrainConfig
from fewshot.data.cache import load_bank
from fewshot.data.episodes import episode_seed
from fewshot.data.splits import keep_resident, load_fewshot_data, resident_loader
from fewshot.data.tables import open_split
from fewshot.methods.base import StepOutput, TrainedModule
from fewshot.methods.build import build_method
from fewshot.models.distances import cosine_similarity, squared_euclidean
from fewshot.precision import Precision, choose_precision
from fewshot.training import loop
from fewshot.training.loop import Placement, Trainer
from fewshot.training.run import run
from fewshot.training.tasks import BatchPlan, EpisodeTask, ViewBatchTask
from tests.conftest import StopAfter, tiny_overrides


def _config(root: Path, **extra: object) -> ExperimentConfig:
    return load_config(ExperimentConfig, None, tiny_overrides(root, **{"train.epochs": 2, **extra}))


def test_amp_defaults_to_cuda_and_prefers_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_precision(cpu, None) == Precision("cpu")  # opt-in on CPUs: bit-reproducible runs by default
    assert choose_precision(cpu, True) == Precision("cpu", torch.bfloat16)
    assert choose_precision(cuda, False) == Precision("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose_precision(cuda, None) == Precision("cuda", torch.bfloat16)
    assert not choose_precision(cuda, None).scaled
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a pre-Ampere GPU (V100, T4)
    assert choose_precision(cuda, None) == Precision("cuda", torch.float16)
    assert choose_precision(cuda, None).scaled


def test_distances_stay_in_float32_inside_autocast() -> None:
    torch.manual_seed(0)
    prototypes = torch.randn(5, 1600) * 10
    query = prototypes + 1e-2 * torch.randn(5, 1600)  # each query next to its prototype: |q|^2 ~ 1.6e5, d^2 ~ 0.16
    exact = squared_euclidean(query, prototypes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = squared_euclidean(query.bfloat16(), prototypes.bfloat16())
        cosines = cosine_similarity(query, prototypes)
        naive = ((query.bfloat16() @ prototypes.bfloat16().T) * -2).float()  # what autocast would do unguarded
    assert mixed.dtype == torch.float32 and cosines.dtype == torch.float32
    # The features themselves were rounded to bfloat16, so distances differ by that rounding alone...
    rounded = squared_euclidean(query.bfloat16().float(), prototypes.bfloat16().float())
    torch.testing.assert_close(mixed, rounded)
    assert torch.equal(mixed.argmin(1), torch.arange(5)) and torch.equal(exact.argmin(1), torch.arange(5))
    # ...while the cross term alone, in bfloat16, is off by far more than the distances themselves
    assert (naive - (-2 * query @ prototypes.T)).abs().max() > exact.diagonal().max()


def test_bfloat16_autocast_trains_through_the_loop_as_float32_does(tiny_builtin: Path, tmp_path: Path) -> None:
    def fit(amp: bool) -> tuple[list[torch.dtype], list[float]]:
        config = _config(tiny_builtin, **{"train.amp": amp, "train.epochs": 3})
        data = load_fewshot_data(config.data, config.train_episode, config.eval_episode)
        torch.manual_seed(0)
        method = build_method(config)
        dtypes: list[torch.dtype] = []
        method.encoder.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
        trainer = Trainer(config, method, EpisodeTask(config, data), tmp_path / str(amp))
        assert trainer.precision == (Precision("cpu", torch.bfloat16) if amp else Precision("cpu"))
        history = trainer.fit().history
        assert all(p.dtype == torch.float32 for p in method.parameters())  # the weights stay float32
        return dtypes, [h["loss"] for h in history]

    dtypes, mixed = fit(amp=True)
    assert set(dtypes) == {torch.bfloat16}  # training steps and validation ran under autocast
    assert set(fit(amp=False)[0]) == {torch.float32}
    _, full = fit(amp=False)
    assert mixed != full and mixed[-1] < 0.5 * mixed[0]
    assert mixed[-1] == pytest.approx(full[-1], rel=0.1)  # the same learning, to bfloat16's rounding


def test_float16_loss_scaling_steps_checkpoints_and_resumes(
    tiny_builtin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # float16 with a GradScaler is what GPUs without bfloat16 get; CPU autocast runs the same code path.
    monkeypatch.setattr(loop, "choose_precision", lambda device, amp: Precision("cpu", torch.float16))
    config = _config(tiny_builtin, **{"train.amp": True, "model.hidden": 8})  # CPUs have slow float16 kernels
    result = run(config, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] >= 0
    assert all(math.isfinite(h["loss"]) for h in result.fit.history)
    assert result.score is not None and result.score.mean > 20

    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "resumed", reporter=StopAfter(1))
    resumed = run(config, tmp_path / "resumed")  # from last.pt, scaler state included
    assert [h["loss"] for h in resumed.fit.history] == [h["loss"] for h in result.fit.history]


def test_banks_move_to_the_device_when_resident(tiny_builtin: Path) -> None:
    table = open_split(tiny_builtin, "train")
    bank = load_bank(table, 32)
    meta = torch.device("meta")  # a device that is not the CPU, present on every machine
    moved = keep_resident(bank, meta, True)
    assert moved.images.device == meta and moved.labels.device.type == "cpu"  # samplers read labels on the CPU
    assert keep_resident(bank, meta, False) is bank
    assert keep_resident(bank, torch.device("cpu"), True) is bank  # the CPU's banks are already in memory
    assert resident_loader(load_bank, meta, True)(table, 32, False, None).images.device == meta


def test_automatic_residency_keeps_banks_that_do_not_fit_in_host_memory(
    tiny_builtin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = load_bank(open_split(tiny_builtin, "train"), 32)
    size = bank.images.numel()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * size, 80 * size))
    assert keep_resident(bank, torch.device("cuda", 0), None) is bank  # 1/3 of the free memory: too much


def test_resident_banks_give_the_same_training(tiny_builtin: Path, tmp_path: Path) -> None:
    config = _config(tiny_builtin)
    apart = run(config, tmp_path / "apart")
    kept = config.model_copy(update={"train": config.train.model_copy(update={"resident": True})})
    resident = run(kept, tmp_path / "resident")
    assert _without_speed(apart.fit.history) == _without_speed(resident.fit.history)


def _without_speed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if not k.endswith("_per_s")} for h in history]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_run_keeps_its_images_on_the_gpu_in_mixed_precision(tiny_builtin: Path, tmp_path: Path) -> None:
    config, cuda = _config(tiny_builtin, **{"train.device": "cuda"}), torch.device("cuda")
    data = load_fewshot_data(
        config.data, config.train_episode, config.eval_episode, load=resident_loader(load_bank, cuda, None)
    )
    assert data.train.images.is_cuda and data.val.images.is_cuda
    trainer = Trainer(config, build_method(config), EpisodeTask(config, data), tmp_path, Placement(cuda))
    assert trainer.precision.dtype in (torch.bfloat16, torch.float16)
    assert all(math.isfinite(h["loss"]) for h in trainer.fit().history)
    result = run(config, tmp_path / "run")  # the whole run: resident banks, AMP, float32 final score
    assert result.score is not None and result.score.mean > 20


def test_inputs_are_augmented_outside_autocast_and_only_the_model_runs_under_it(
    tiny_builtin: Path, tmp_path: Path
) -> None:
    class Probe(TrainedModule):  # records what each step is given, and whether autocast is on inside it
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 1)
            self.seen: list[tuple[torch.Tensor, bool]] = []

        def forward(self, views: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
            self.seen.append((views[0], torch.is_autocast_enabled("cpu")))
            return StepOutput({"loss": self.linear(views[0].mean((2, 3))).pow(2).mean()})

    config = load_config(PretrainConfig, None, [f"data.root={tiny_builtin}", "data.image_size=32",
                                               "train.epochs=1", "train.batch_size=40", "train.amp=true"])  # fmt: skip
    bank = load_bank(open_split(tiny_builtin, "train"), 32)
    task = ViewBatchTask(bank, config.byol, BatchPlan(config.train, 0, 1, lambda model, device: {"val_acc": 0.0}))
    probe = Probe()
    Trainer(config, probe, task, tmp_path).fit()
    assert probe.seen and all(autocast for _, autocast in probe.seen)
    # The first step's views, drawn again from the epoch's seed in float32: identical. Under autocast the blur's
    # convolution would run in bfloat16 and the views would differ by up to ~0.03.
    torch.manual_seed(episode_seed(config.seed, 1))
    assert torch.equal(probe.seen[0][0], task.inputs(0, torch.device("cpu"))[0])
