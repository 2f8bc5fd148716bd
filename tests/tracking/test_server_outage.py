"""A real MLflow tracking server stopped in the middle of a run: training goes on, the epochs logged while it
was down reach it once it is back, and a server that never comes back is a clear error, not a silent loss."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fewshot.tracking.runs import MlflowReporter, Tracker, TrackingError

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``mlflow server`` on a SQLite store in ``folder``, started and stopped at will on one port."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                   "--artifacts-destination", str(self.folder / "artifacts")]  # fmt: skip
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("mlflow server did not start")

    def stop(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, 9)
        self.process.wait()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail each call at once while the server is down
    server = Server(tmp_path)
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


def test_epochs_logged_while_the_server_is_down_arrive_when_it_is_back(server: Server) -> None:
    tracker = Tracker(server.uri)
    run_id = tracker.start_run("outage", "run")
    reporter = MlflowReporter(tracker, run_id, patience=120)
    reporter.report(1, {"loss": 1.0, "val_acc": 30.0}, None)
    server.stop()
    reporter.report(2, {"loss": 0.8, "val_acc": 35.0}, None)  # training goes on
    reporter.report(3, {"loss": 0.7, "val_acc": 36.0}, None)
    assert [epoch for epoch, _ in reporter.pending] == [2, 3]
    threading.Timer(3.0, server.start).start()  # back a few seconds later, same store
    reporter.flush()
    history = MlflowClient(server.uri).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.8), (3, 0.7)]  # in order, none twice
    assert not reporter.pending


def test_a_server_that_stays_down_is_a_clear_error(server: Server) -> None:
    tracker = Tracker(server.uri)
    run_id = tracker.start_run("outage", "run")
    reporter = MlflowReporter(tracker, run_id, patience=2)
    server.stop()
    reporter.report(1, {"loss": 1.0}, None)
    with pytest.raises(TrackingError, match=rf"MLflow at {server.uri} unreachable for 2 s: epoch\(s\) 1 of run"):
        reporter.flush()
