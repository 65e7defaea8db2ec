"""Fixtures of the CLI tests: the lab with BMCs and the real operator (tests/integration's
harness), and ``run_cli`` which runs ``hosted-engine`` in-process and captures its output."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import Cluster, LabCluster, OperatorThread
from hosted_engine.cli.main import main
from hosted_engine.lab.sim.timings import LabTimings
from hostedengine_lab import HOST_ENV


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def he_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A 3-node lab with BMCs and the operator (standalone), with the HostedEngine thresholds
    of the integration scenarios."""
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)
    lab = LabCluster(3, timings=LabTimings.fast(), bmc=True).start()
    try:
        op = OperatorThread(lab.kubeconfig).start()
        try:
            yield Cluster(lab, op)
        finally:
            op.stop()
    finally:
        lab.stop()
