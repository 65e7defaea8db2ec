"""The demo's parts without a lab: Host power management from the lab's published endpoints,
the step list, the reporter (plain text off a terminal), the score table, and the watchdog that
stops the operator when the lab process ends (real processes)."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hosted_engine.cli.main import main
from hosted_engine.demo.output import Reporter
from hosted_engine.demo.processes import alive
from hosted_engine.demo.scenario import (
    ENABLED_STEPS,
    STEPS,
    StepFailed,
    bmc_spec,
    default_bmc_kind,
    enabled_steps,
    engine_up,
    score_table,
    wait_until,
)

ENDPOINTS = {
    "node-1.redfish": "https://127.0.0.1:40317/redfish/v1/Systems/node-1",
    "node-1.ipmi": "127.0.0.1:54979",
    "node-2.redfish": "https://127.0.0.1:40317/redfish/v1/Systems/node-2",
    "node-2.ipmi": "127.0.0.1:56425",
}


def test_power_management_is_built_from_the_lab_endpoints() -> None:
    redfish = bmc_spec(ENDPOINTS, "node-1", "redfish")
    assert redfish == {
        "type": "redfish", "address": "127.0.0.1", "port": 40317, "systemID": "node-1",
        "credentialsSecretRef": {"name": "bmc-node-1", "namespace": "lab-system"},
        "caBundleSecretRef": {"name": "bmc-node-1", "namespace": "lab-system", "key": "ca.crt"},
    }
    ipmi = bmc_spec(ENDPOINTS, "node-2", "ipmi")
    assert (ipmi["type"], ipmi["address"], ipmi["port"]) == ("ipmi", "127.0.0.1", 56425)
    assert "caBundleSecretRef" not in ipmi
    with pytest.raises(StepFailed, match="no IPMI endpoint for node-3"):
        bmc_spec(ENDPOINTS, "node-3", "ipmi")


def test_odd_nodes_get_redfish_and_even_nodes_ipmi() -> None:
    assert [default_bmc_kind(f"node-{i}") for i in range(1, 5)] == [
        "redfish", "ipmi", "redfish", "ipmi"]


def test_enabled_steps_keep_the_scenario_order_and_reject_unknown_names() -> None:
    names = [s.name for s in enabled_steps()]
    assert names == [s.name for s in STEPS if s.name in ENABLED_STEPS]
    assert [s.name for s in enabled_steps(("engine", "lab"))] == ["lab", "engine"]
    with pytest.raises(ValueError, match="unknown demo steps"):
        enabled_steps(("lab", "teleport"))


def test_reporter_is_plain_text_off_a_terminal_and_coloured_on_one() -> None:
    plain = io.StringIO()
    Reporter(plain).ok("fine")
    assert "\033[" not in plain.getvalue()
    assert plain.getvalue().rstrip().endswith("OK   fine")
    coloured = io.StringIO()
    Reporter(coloured, colour=True).fail("broken")
    assert "\033[31mFAIL broken\033[0m" in coloured.getvalue()


def test_score_table_and_engine_up() -> None:
    he = {"status": {
        "state": "EngineUp", "host": "node-2", "engine": {"health": "good"},
        "conditions": [{"type": "Available", "status": "True"}],
        "hosts": [{"host": "node-1", "score": 1800, "state": "Up", "penalties": ["memory"]},
                  {"host": "node-2", "score": 3400, "state": "Up", "engineRunning": True}]}}
    rows = score_table(he)
    assert rows[1].split()[:2] == ["node-1", "1800"] and rows[1].endswith("memory")
    assert rows[2].split()[:4] == ["node-2", "3400", "Up", "yes"]
    assert engine_up(he)
    assert not engine_up(he, avoid="node-2")
    he["status"]["engine"] = {"health": "bad"}
    assert not engine_up(he)


def test_wait_until_names_what_it_waited_for_and_the_last_state() -> None:
    with pytest.raises(StepFailed, match=r"timed out after 0.2s waiting for the moon; "
                                         r"last seen: 'still night'"):
        wait_until("the moon", lambda: None, 0.2, lambda: "still night")
    assert wait_until("a value", lambda: 42, 1) == 42


def test_demo_refuses_fewer_than_two_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--hosts", "1"]) == 2
    assert "--hosts must be at least 2" in capsys.readouterr().err


def test_watchdog_stops_the_operator_when_the_lab_process_ends(tmp_path: Path) -> None:
    lab = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    pid_file = tmp_path / "operator.pid"
    child_pid_file = tmp_path / "child.pid"
    child = (f"import os, time; open({str(child_pid_file)!r}, 'w').write(str(os.getpid())); "
             "time.sleep(120)")
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "hosted_engine.demo.watchdog", "--lab-pid", str(lab.pid),
         "--pid-file", str(pid_file), "--", sys.executable, "-c", child],
        stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (child_pid_file.exists() and child_pid_file.read_text()):
            assert time.monotonic() < deadline, "the watchdog starts its command"
            time.sleep(0.05)
        child_pid = int(child_pid_file.read_text())
        assert pid_file.read_text().strip() == str(watchdog.pid)
        assert alive(child_pid)
        lab.send_signal(signal.SIGTERM)
        lab.wait(10)
        assert watchdog.wait(30) == 0
        assert "the lab (pid" in (watchdog.stdout.read() if watchdog.stdout else "")
        assert not alive(child_pid)
        assert not pid_file.exists()
    finally:
        for proc in (watchdog, lab):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_watchdog_passes_on_the_exit_code_of_its_command(tmp_path: Path) -> None:
    lab = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        code = subprocess.run(
            [sys.executable, "-m", "hosted_engine.demo.watchdog", "--lab-pid", str(lab.pid),
             "--", sys.executable, "-c", "raise SystemExit(3)"],
            capture_output=True, timeout=60, check=False).returncode
        assert code == 3
        assert lab.poll() is None, "the watchdog never touches the lab"
    finally:
        lab.kill()
        lab.wait(10)


def test_failover_record_is_shown_relative_to_the_loss() -> None:
    from hosted_engine.demo.scenario import failover_record_text

    record = {"fromHost": "node-1", "toHost": "node-2", "lostAt": "2026-11-22T06:45:05.5Z",
              "detectedAt": "2026-11-22T06:45:07.5Z", "fencedAt": "2026-11-22T06:45:08Z",
              "healthyAt": "2026-11-22T06:45:10.25+00:00"}
    assert failover_record_text(record) == (
        "node-1 -> node-2; after the loss: detected +2.0s, fenced +2.5s, healthy +4.8s")
    assert failover_record_text({"fromHost": "node-1", "toHost": "node-3"}) == "node-1 -> node-3"
