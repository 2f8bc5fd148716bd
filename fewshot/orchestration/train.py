"""One training run as a Ray Train run: the library's training loop inside TorchTrainer workers.

A run is a few-shot experiment, a backbone pre-training or a fine-tuning, by the type of its config.

The worker function builds a :class:`~fewshot.training.loop.Placement` from Ray's context (device, rank,
DDP wrapping through ``ray.train.torch.prepare_model``) and a reporter that forwards each epoch to
``ray.train.report`` with the checkpoint, so a restarted worker (``FailureConfig``) resumes from the last
epoch. Rank 0 also logs the epoch metrics and, at the end, the final score and artifacts to MLflow.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from torch import nn

from fewshot.atomic import link_atomic
from fewshot.checkpoint import load_checkpoint, save_checkpoint
from fewshot.config.loading import config_dict, validate_config
from fewshot.config.schema import TRAINED_CONFIGS, ExperimentConfig, PretrainConfig, TrainedConfig
from fewshot.data.cache import ImageBank, load_bank
from fewshot.errors import ConfigError
from fewshot.methods.build import load_method
from fewshot.methods.classifier import Classifier
from fewshot.methods.serving import EpisodeClassifier, ImageModel
from fewshot.models.resnet import FEATURES, load_backbone, resnet_backbone
from fewshot.orchestration.shared import SharedBanks
from fewshot.runtime import ALLOCATOR_ENV
from fewshot.tracking.runs import MlflowReporter, Tracker, system_metrics
from fewshot.tracking.tables import CI_METRIC, METRIC, PROTOCOL_DETAIL, PROTOCOL_TAG, SELECT_METRIC
from fewshot.training.loop import Placement
from fewshot.training.recipe import RunResult
from fewshot.training.reporting import LogReporter, MultiReporter, Reporter
from fewshot.training.run import run
from fewshot.viz.plots import learning_curves
from fewshot.viz.tsne import checkpoint_tsne

log = logging.getLogger(__name__)

HALLUCINATING = ("hallucination", "afhn")  # methods whose runs also draw the t-SNE of real and fake features


@dataclass(frozen=True)
class TrainJob:
    """What one Ray Train run needs: the config, where to write, and the MLflow run to log into."""

    config: TrainedConfig
    name: str
    run_dir: Path
    storage_path: Path | str  # Ray Train's checkpoints and results: a folder or a URI (see paths.ray_storage)
    tracking_uri: str
    mlflow_run_id: str
    num_workers: int = 1
    use_gpu: bool | None = None  # default: when the cluster has GPUs
    max_failures: int = 1
    resources_per_worker: dict[str, float] | None = None  # default: the cluster's CPUs split between workers
    callbacks: tuple[Any, ...] = ()  # Ray Train callbacks, e.g. Tune's report callback inside a trial
    banks: SharedBanks | None = None  # decoded splits already in the object store


def run_training(job: TrainJob) -> ray.train.Result:
    """Fit ``job`` with a TorchTrainer; raises ``ray.train.TrainingFailedError`` when retries run out."""
    resources, cluster = job.resources_per_worker, ray.cluster_resources()
    use_gpu = job.use_gpu if job.use_gpu is not None else cluster.get("GPU", 0) > 0
    if resources is None and not use_gpu:
        resources = {"CPU": max(1, int(cluster.get("CPU", 1)) // job.num_workers)}
    trainer = TorchTrainer(
        _worker,
        # One worker has no peers: gloo's group costs nothing, where NCCL would set up CUDA communicators.
        torch_config=TorchConfig(backend="gloo") if job.num_workers == 1 else None,
        train_loop_config={
            "kind": type(job.config).__name__,
            "config": config_dict(job.config),
            "run_dir": str(job.run_dir),
            "name": job.name,
            "tracking_uri": job.tracking_uri,
            "run_id": job.mlflow_run_id,
            "banks": job.banks,
        },
        scaling_config=ScalingConfig(
            num_workers=job.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=job.name,
            storage_path=str(job.storage_path),
            failure_config=FailureConfig(max_failures=job.max_failures),
            # A restart needs only the newest checkpoint; each is a whole copy (a ResNet-50 run's is ~0.5 GB).
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=list(job.callbacks),
            # Train workers run the loop in a thread, whose malloc arena ignores the main arena's settings:
            # one arena, tuned from process start, keeps the in-process speed (measured 2.2 -> 3.2 episodes/s).
            # A tracking server that is down costs an epoch a few seconds of retries, not MLflow's default minutes:
            # the reporter keeps the epoch and sends it later.
            worker_runtime_env={"env_vars": {**ALLOCATOR_ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}},  # type: ignore[call-arg]
        ),
    )
    return trainer.fit()


def _worker(payload: dict[str, Any]) -> None:
    config = validate_config(TRAINED_CONFIGS[payload["kind"]], payload["config"], "train job")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = _device(config.train.device)
    # Mini-batch runs split each batch between workers: on GPUs their BatchNorm statistics are synced (BYOL's
    # batch statistics matter); episodes are small and whole on every worker, so few-shot runs keep theirs.
    sync_bn = world > 1 and device.type == "cuda" and not isinstance(config, ExperimentConfig)
    placement = Placement(device=device, rank=rank, world_size=world, wrap=_wrapper(world, sync_bn))
    run_dir, run_id = Path(payload["run_dir"]), payload["run_id"]
    banks: SharedBanks | None = payload["banks"]
    # Rank 0 logs to MLflow, before Ray: an epoch is in MLflow before its checkpoint exists, so a restart never
    # loses one.
    mlflow = MlflowReporter(Tracker(payload["tracking_uri"]), run_id) if rank == 0 else None
    ray_reporter = RayReporter(last_epoch=config.train.epochs)
    reporters: list[Reporter] = [*([mlflow] if mlflow else []), LogReporter(), ray_reporter]
    if mlflow is not None:  # which node and GPU ran it, and whether the decoded data came from the object store
        where = {
            "ray_node": ray.get_runtime_context().get_node_id(),
            "ray_gpus": ",".join(map(str, ray.get_gpu_ids())) or "none",
            "device": str(device),
            "data_from": "object store" if banks is not None else "disk cache",
        }
        mlflow.tracker.set_tags(run_id, where)
    load = banks.load if banks is not None else load_bank
    with system_metrics(mlflow.tracker, run_id) if mlflow is not None else nullcontext():
        result = run(config, run_dir, MultiReporter(*reporters), placement, _restored_state(), load)
    if mlflow is not None:
        mlflow.flush()  # epochs kept while the tracking server was down; waits for it to come back
        plots = [learning_curves(result.fit.history, payload["name"], run_dir / "learning_curves.png")]
        if getattr(config, "method", None) in HALLUCINATING:
            plots.append(checkpoint_tsne(result.fit.best_checkpoint, run_dir / "tsne.png", device, load=load))
        _log_final(mlflow.tracker, run_id, config, result, run_dir, plots)
    ray_reporter.report_last(result)


def _device(setting: str) -> torch.device:
    """The worker's device: the GPU Ray assigned it, unless the config asks for the CPU (``train.device=cpu``)."""
    if setting == "cpu":
        return torch.device("cpu")
    device = ray.train.torch.get_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Ray gave this worker GPU {ray.get_gpu_ids()}, but torch sees no CUDA device on node "
            f"{ray.get_runtime_context().get_node_id()[:8]} (check its driver, or set train.device=cpu)"
        )
    if setting == "cuda" and device.type != "cuda":
        raise ConfigError("train.device=cuda, but the worker has no GPU (run with GPUs, or train.device=auto)")
    return device


def _wrapper(world: int, sync_bn: bool) -> Callable[[nn.Module], nn.Module]:
    """Identity for one worker; else DistributedDataParallel (through Ray), BatchNorm synced if ``sync_bn``."""
    if world == 1:
        return lambda module: module

    def wrap(module: nn.Module) -> nn.Module:
        if sync_bn:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return ray.train.torch.prepare_model(module, move_to_device=False)

    return wrap


def _restored_state() -> dict[str, Any] | None:
    """The last reported checkpoint, when Ray restarts a failed worker group."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_checkpoint(Path(folder) / "last.pt")


class RayReporter:
    """Forwards each epoch to ``ray.train.report``; rank 0 attaches its ``last.pt`` as the checkpoint.

    The last epoch is held back until the run has scored its best checkpoint and logged it (:meth:`report_last`):
    a scheduler (ASHA, at its ``max_t``) stops a trial on its last report, and must not cut that work short.
    """

    def __init__(self, last_epoch: int) -> None:
        self.last_epoch = last_epoch
        self.held: tuple[int, dict[str, float], Path | None] | None = None

    def report(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if epoch == self.last_epoch:
            self.held = (epoch, metrics, checkpoint)
            return
        self._send(epoch, metrics, checkpoint)

    def report_last(self, result: RunResult) -> None:
        """Send the last epoch (on a resumed, finished run: the history's last entry), with the final score."""
        if self.held is not None:
            epoch, metrics, checkpoint = self.held
        elif result.fit.history:
            metrics = dict(result.fit.history[-1])
            epoch, checkpoint = int(metrics.pop("epoch")), result.fit.last_checkpoint if result.score else None
        else:
            return
        final = {METRIC: result.score.mean} if result.score is not None else {}
        self._send(epoch, {**metrics, **final}, checkpoint)

    def _send(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        metrics = {"epoch": epoch, **metrics}
        if checkpoint is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            link_atomic(checkpoint, Path(folder) / "last.pt")  # same file system: no copy of the weights
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))


def _log_final(
    tracker: Tracker, run_id: str, config: TrainedConfig, result: RunResult, run_dir: Path, plots: list[Path]
) -> None:
    # the chosen epoch and its selection score: what may pick a run (the best of a study), never report_acc
    final = {"best_epoch": float(result.fit.best_epoch), SELECT_METRIC: result.fit.best_val_acc}
    outcome = result.outcome
    if outcome is not None:
        final |= {METRIC: outcome.score.mean, CI_METRIC: outcome.score.ci95}
        for name, baseline in (outcome.baselines | outcome.probes).items():
            final |= {f"{name}_acc": baseline.mean, f"{name}_ci95": baseline.ci95}
        tracker.log_datasets(run_id, outcome.inputs)
        if outcome.protocol is not None:
            protocol = outcome.protocol
            tracker.set_tags(run_id, {PROTOCOL_TAG: protocol.name, PROTOCOL_DETAIL: protocol.describe()})
    tracker.log_metrics(run_id, final, step=int(result.fit.history[-1]["epoch"]) if result.fit.history else 0)
    written = (outcome.predictions, *outcome.files) if outcome is not None else ()
    for path in (run_dir / "config.yaml", *written, *plots):
        if path.is_file():
            tracker.log_artifact(run_id, path)
    if result.fit.best_checkpoint.is_file():
        # The model, not the optimiser state a resume needs (2/3 of a ResNet-50 run's checkpoint under Adam):
        # enough for jobs/predict.py, jobs/tsne.py and fine-tuning. The run folder keeps the whole file.
        state = load_checkpoint(result.fit.best_checkpoint)
        with tempfile.TemporaryDirectory() as folder:
            slim = Path(folder) / result.fit.best_checkpoint.name
            save_checkpoint(slim, {k: v for k, v in state.items() if k not in ("optimizers", "schedules", "scaler")})
            tracker.log_artifact(run_id, slim)
        if outcome is not None:
            try:
                _log_model(tracker, run_id, config, result.fit.best_checkpoint, run_dir, dict(outcome.inputs)["report"])
            except Exception as err:  # lineage, not the result: a trained and scored run stands
                log.warning("could not log the model of run %s: %s", run_id, err)
                tracker.set_tags(run_id, {"model_error": f"{type(err).__name__}: {err}"[:5000]})


def _log_model(
    tracker: Tracker, run_id: str, config: TrainedConfig, checkpoint: Path, run_dir: Path, report: ImageBank
) -> None:
    """The run's best model as an MLflow model, uint8 images in (a slice of the report images as its input
    example): a few-shot run's :class:`EpisodeClassifier` (one episode's images in, its queries' logits out), a
    fine-tuning's classifier (logits) or a pre-training's backbone (features) as an :class:`ImageModel`."""
    if isinstance(config, ExperimentConfig):
        trained, method = load_method(checkpoint)
        spec = trained.eval_episode
        example = report.images[: spec.way * (spec.shot + 1)].numpy()  # support class by class, then queries
        tracker.log_model(run_id, EpisodeClassifier(method, spec.way, spec.shot), example)
        return
    backbone = resnet_backbone(config.arch)
    if isinstance(config, PretrainConfig):  # the backbone it was run for, as fine-tuning loads it
        load_backbone(backbone, run_dir / "backbone.pt", config.arch)
        model = ImageModel(backbone)
    else:
        state = load_checkpoint(checkpoint)["model"]
        classifier = Classifier(backbone, FEATURES[config.arch], int(state["classifier.weight"].shape[0]))
        classifier.load_state_dict(state)
        model = ImageModel(classifier.backbone, classifier.classifier)
    tracker.log_model(run_id, model, report.images[:4].numpy())
