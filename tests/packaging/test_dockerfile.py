"""The Dockerfile, read with BuildKit's own parser (the `dockerfile` package)."""

from __future__ import annotations

from pathlib import Path

import dockerfile
from hosted_engine.cli import run as run_cli
from hosted_engine.cli.main import build_parser
from packaging_checks import ROOT


def stages() -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd.upper() == "FROM":
            result.append([])
        assert result, f"instruction before FROM: {command.original}"
        result[-1].append(command)
    return result


def last(stage: list[dockerfile.Command], cmd: str) -> dockerfile.Command | None:
    found = [c for c in stage if c.cmd.upper() == cmd]
    return found[-1] if found else None


def test_multi_stage_with_pinned_bases() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        image = stage[0].value[0]
        assert ":" in image and not image.endswith(":latest"), image


def test_runtime_stage_takes_only_the_build_result() -> None:
    *builders, runtime = stages()
    names = {s[0].value[2].lower() for s in builders if len(s[0].value) == 3}
    copies = [c for c in runtime if c.cmd.upper() == "COPY"]
    assert copies and all(
        any(f.lower() in {f"--from={n}" for n in names} for f in c.flags) for c in copies
    ), [c.original for c in copies]
    assert last(runtime, "RUN") is None or "pip" not in last(runtime, "RUN").value[0]


def test_runs_as_a_numeric_non_root_user() -> None:
    runtime = stages()[-1]
    user = last(runtime, "USER")
    assert user is not None
    uid, _, gid = user.value[0].partition(":")
    # Numeric, so that the kubelet can enforce runAsNonRoot.
    assert uid.isdigit() and int(uid) > 0
    assert gid.isdigit() and int(gid) > 0


def test_cmd_is_the_operator_on_all_namespaces() -> None:
    cmd = last(stages()[-1], "CMD")
    assert cmd is not None and cmd.json, "exec form, so that signals reach the operator"
    assert list(cmd.value) == ["hosted-engine", "run", "--all-namespaces"]
    assert last(stages()[-1], "ENTRYPOINT") is None  # the Deployment's args replace CMD whole
    args = build_parser().parse_args(list(cmd.value[1:]))
    assert args.func is run_cli.run_command
    options = run_cli.options_from_args(args)
    assert options.clusterwide and not options.standalone


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src.rstrip("/").removeprefix("./")
        for stage in stages()
        for c in stage
        if c.cmd.upper() == "COPY" and not c.flags
        for src in c.value[:-1]
    }
    assert copied <= included, copied - included
    assert all(Path(ROOT, name).exists() for name in included)
