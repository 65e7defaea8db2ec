"""``hosted-engine run``: argument handling, and which cluster the process ends up talking to."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes.client
import pytest
import yaml
from hosted_engine.adapters import kube
from hosted_engine.cli import run as run_cli
from hosted_engine.cli.main import CliError, build_parser
from hosted_engine.handlers import startup


def parse(*argv: str) -> run_cli.RunOptions:
    args = build_parser().parse_args(["run", *argv])
    assert args.func is run_cli.run_command
    return run_cli.options_from_args(args)


def write_kubeconfig(path: Path, server: str, token: str, context: str = "lab") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": context, "cluster": {"server": server}}],
                "users": [{"name": context, "user": {"token": token}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def _restore_kube_configuration(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests here re-point the process at fake clusters; put everything back afterwards."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    saved_env = os.environ.get("KUBECONFIG")
    saved_default = kubernetes.client.Configuration.get_default_copy()
    saved_source = (kube._source.kubeconfig, kube._source.context)
    saved_cfg = kube._configuration
    yield
    if saved_env is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = saved_env
    kubernetes.client.Configuration.set_default(saved_default)
    kube._source.kubeconfig, kube._source.context = saved_source
    kube._configuration = saved_cfg


def test_defaults_serve_all_namespaces_with_peering_on() -> None:
    options = parse()
    assert options.clusterwide
    assert not options.standalone
    assert options.peering == startup.PEERING_NAME
    assert 0 < options.priority < 2**53  # an exact integer in the peering object's JSON
    kwargs = options.kopf_kwargs()
    assert kwargs["clusterwide"] is True
    assert kwargs["namespaces"] == []
    assert kwargs["peering_name"] == startup.PEERING_NAME  # named: kopf makes peering mandatory
    assert "standalone" not in kwargs
    assert kwargs["liveness_endpoint"] is None


def test_replicas_started_together_draw_distinct_priorities() -> None:
    started = datetime(2026, 5, 1, tzinfo=UTC)
    priorities = {run_cli.default_priority(started) for _ in range(20)}
    # A tie would pause both replicas; 20 draws of 20 random bits practically never collide.
    assert len(priorities) == 20


def test_older_replica_outranks_a_newer_one() -> None:
    # A rolling update starts a new pod next to the running one: the running one keeps acting.
    older = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    newer = older + timedelta(seconds=1)
    assert min(run_cli.default_priority(older) for _ in range(50)) > max(
        run_cli.default_priority(newer) for _ in range(50)
    )


def test_explicit_priority_is_kept() -> None:
    assert parse("--priority", "666").kopf_kwargs()["priority"] == 666


def test_namespaces_repeat_and_deduplicate() -> None:
    options = parse("--namespace", "engine", "-n", "backups", "--namespace", "engine")
    assert options.namespaces == ("engine", "backups")
    assert not options.clusterwide
    kwargs = options.kopf_kwargs()
    assert kwargs["clusterwide"] is False
    assert kwargs["namespaces"] == ["engine", "backups"]


def test_standalone_turns_peering_off() -> None:
    kwargs = parse("--standalone", "--all-namespaces").kopf_kwargs()
    assert kwargs["standalone"] is True
    assert "peering_name" not in kwargs


def test_liveness_url_is_passed_to_kopf() -> None:
    kwargs = parse("--liveness", "http://0.0.0.0:8080/healthz").kopf_kwargs()
    assert kwargs["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"


@pytest.mark.parametrize(
    "argv",
    [
        ["--namespace", "a", "--all-namespaces"],
        ["--liveness", "https://0.0.0.0:8080/healthz"],
        ["--liveness", "http://0.0.0.0:99999/healthz"],
        ["--liveness", "0.0.0.0:8080"],
        ["--namespace", "Not_A_Name"],
        ["--peering", "UPPER"],
        ["--priority", "high"],
    ],
)
def test_bad_arguments_exit_with_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", *argv])
    assert exc.value.code == 2
    assert "usage: hosted-engine run" in capsys.readouterr().err


def test_help_works_from_the_console_script() -> None:
    exe = Path(sys.executable).parent / "hosted-engine"
    result = subprocess.run(
        [str(exe), "run", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    for option in ("--kubeconfig", "--namespace", "--all-namespaces", "--standalone",
                   "--liveness", "--peering", "--verbose"):
        assert option in result.stdout


def test_missing_kubeconfig_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "hosted-engine"
    missing = tmp_path / "nope.kubeconfig"
    result = subprocess.run(
        [str(exe), "run", "--kubeconfig", str(missing), "--standalone"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: kubeconfig {missing} does not exist"


def test_prepare_points_client_and_kopf_login_at_the_given_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client library captured $KUBECONFIG at import; a different file given on the command
    # line must still win, for our adapters and for kopf's login alike.
    other = write_kubeconfig(tmp_path / "other", "https://10.9.9.9:6443", "other-token")
    monkeypatch.setenv("KUBECONFIG", str(other))
    given = write_kubeconfig(tmp_path / "lab", "https://127.0.0.1:6443", "lab-token")

    run_cli.prepare(parse("--kubeconfig", str(given), "--standalone"))

    assert os.environ["KUBECONFIG"] == str(given)
    assert kubernetes.client.Configuration.get_default_copy().host == "https://127.0.0.1:6443"
    info = startup.login()
    assert info.server == "https://127.0.0.1:6443"
    assert info.scheme == "Bearer"
    assert info.token == "lab-token"
    assert not info.insecure  # TLS verification stays on
    import hosted_engine.handlers

    assert hosted_engine.handlers.startup is startup


def test_kubeconfig_env_is_read_when_the_operator_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = write_kubeconfig(tmp_path / "late", "https://127.0.0.2:6443", "late-token")
    monkeypatch.setenv("KUBECONFIG", str(late))
    run_cli.prepare(parse("--standalone"))
    creds = kube.credentials()
    assert creds.server == "https://127.0.0.2:6443"
    assert creds.token is not None and creds.token.get_secret_value() == "late-token"
    assert "late-token" not in repr(creds)  # a secret never shows in a repr or a log line


def test_context_selects_the_cluster(tmp_path: Path) -> None:
    path = tmp_path / "two"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "a",
        "clusters": [
            {"name": "a", "cluster": {"server": "https://10.0.0.1:6443"}},
            {"name": "b", "cluster": {"server": "https://10.0.0.2:6443"}},
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "a", "context": {"cluster": "a", "user": "u"}},
            {"name": "b", "context": {"cluster": "b", "user": "u"}},
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    run_cli.prepare(parse("--kubeconfig", str(path), "--context", "b"))
    assert kube.credentials().server == "https://10.0.0.2:6443"


def test_unknown_context_is_a_cli_error(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "k", "https://127.0.0.1:6443", "t")
    with pytest.raises(CliError) as exc:
        run_cli.prepare(parse("--kubeconfig", str(path), "--context", "nope"))
    assert exc.value.code == 2
    assert "nope" in str(exc.value)


def test_operator_process_serves_liveness_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real entry point: handlers imported, startup and login run, kopf's liveness endpoint
    answers with our probe, SIGTERM stops it cleanly. The API server is unreachable on
    purpose: liveness must not depend on it."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_kubeconfig(tmp_path / "k", "https://127.0.0.1:1", "t")
    exe = Path(sys.executable).parent / "hosted-engine"
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "run", "--kubeconfig", str(config), "--standalone",
         "--liveness", f"http://127.0.0.1:{port}/healthz"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        payload = None
        deadline = time.monotonic() + 60
        while payload is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    assert r.status == 200
                    payload = yaml.safe_load(r.read())
            except OSError:
                time.sleep(0.2)
        assert payload is not None, (tmp_path / "operator.log").read_text()
        assert "now" in payload  # handlers/startup.py's probe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "operator.log").read_text()
    assert "Activity 'hosted-engine-settings' succeeded" in output
    assert "Activity 'hosted-engine-login' succeeded" in output
    assert "https://127.0.0.1:1/" in output  # the cluster the --kubeconfig named


def test_kubeconfig_env_may_list_several_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_kubeconfig(tmp_path / "first", "https://127.0.0.3:6443", "t1", context="one")
    second = write_kubeconfig(tmp_path / "second", "https://127.0.0.4:6443", "t2", context="two")
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{tmp_path / 'gone'}{os.pathsep}{second}")
    run_cli.prepare(parse("--context", "two"))
    assert kube.credentials().server == "https://127.0.0.4:6443"
