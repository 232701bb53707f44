"""``--json`` on every command: the parser walked leaf by leaf, and the documents of the cheap commands parsed."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.scenarios import SCENARIOS
from supervisor.cli import build_parser
from supervisor.harness import FOUNDATION, REPO

pytestmark = pytest.mark.timeout(120)

# `up` runs the node in the foreground: what it prints is a log, and its
# machine-readable signal is READY=1 on $NOTIFY_SOCKET, not a JSON document.
NO_DOCUMENT = {"foundation up"}


def _leaves(parser: argparse.ArgumentParser, path: str = "foundation") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, f"{path} {name}")


def cli(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FOUNDATION, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO,
                          env=dict(os.environ))


def test_every_leaf_command_takes_json_and_every_argument_has_help() -> None:
    leaves = dict(_leaves(build_parser()))
    assert {"foundation chaos list", "foundation cluster up", "foundation auth init", "foundation dashboards"} <= set(leaves)
    no_json = [path for path, parser in leaves.items() if path not in NO_DOCUMENT
               and not any("--json" in a.option_strings for a in parser._actions)]
    assert no_json == []
    # One shared option (supervisor.cli.output.add_json_option), so one help text.
    helps = {a.help for path, parser in leaves.items() for a in parser._actions if "--json" in a.option_strings}
    assert helps == {"print one JSON document instead of a table"}
    no_help = [f"{path} {a.dest}" for path, parser in leaves.items() for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert no_help == []


def test_chaos_list_json_is_the_scenarios() -> None:
    proc = cli("chaos", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == list(SCENARIOS)
    assert all(set(r) == {"name", "about", "flags", "unavailable"} for r in rows)
    text = cli("chaos", "list")
    assert text.stdout.splitlines()[0].startswith(rows[0]["name"])


def test_auth_init_json_names_what_it_wrote(tmp_path: Path) -> None:
    proc = cli("auth", "init", "--dir", str(tmp_path), "--node", "a", "--json")
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["nodes"] == ["a"] and reply["users"] == 4 + reply["worker_slots"]
    assert Path(reply["conf"]).is_file() and (tmp_path / "operator.nk").is_file()


def test_dashboards_check_json_lists_the_stale_ones() -> None:
    proc = cli("dashboards", "--check", "--json")
    if "install the dev extras" in proc.stderr and os.environ.get("CI") != "true":
        pytest.skip(f"dashboards need the dev extras: {proc.stderr.strip()}")
    reply = json.loads(proc.stdout)
    assert proc.returncode == (1 if reply["stale"] else 0), proc.stderr
    assert reply["stale"] == [], "committed dashboards are stale: run `make dashboards`"


@pytest.mark.parametrize("args", [("chaos", "list"), ("chaos", "list", "--json"), ("auth", "init", "--json")])
def test_a_closed_pipe_ends_these_commands_quietly(args: tuple[str, ...], tmp_path: Path) -> None:
    # As `foundation chaos list | head -0`: the reader is gone before anything is written.
    if args[0] == "auth":
        args = (*args, "--dir", str(tmp_path))
    read, write = os.pipe()
    os.close(read)
    try:
        proc = cli(*args, stdout=write)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")
