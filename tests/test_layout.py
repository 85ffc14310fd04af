"""The parts keep to what they may import (the contracts in pyproject.toml, explained
in docs/ARCHITECTURE.md), and modules stay small enough to read."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def test_every_import_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_module_is_over_400_lines_unless_its_opening_says_why():
    long = []
    for path in sorted([*ROOT.glob("orchestrator/**/*.py"), *ROOT.glob("serve_app/**/*.py")]):
        text = path.read_text()
        if text.count("\n") > MAX_LINES and "over 400 lines" not in text[:3000]:
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert not long, long


def test_the_core_reads_no_environment_and_opens_no_file():
    """What import contracts cannot name: `os.environ`, `os.getenv`, `open()`, a Path's
    read or write, the process's ids. The host (orchestrator/host/) reads the machine."""
    import ast

    found = []
    for path in sorted(ROOT.glob("orchestrator/core/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
                name = f"os.{node.attr}"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                name = "open()"
            elif isinstance(node, ast.Attribute) and node.attr in (
                "read_text",
                "read_bytes",
                "write_text",
                "write_bytes",
                "mkdir",
                "exists",
            ):
                name = f".{node.attr}()"
            if name:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not found, found


def test_state_names_elsewhere_are_exactly_the_tables():
    import typing

    from orchestrator.cli.jobs import STATE_COLOURS
    from orchestrator.core.states import JobState, StateName
    from serve_app.ray_mapping import STATUS

    names = {s.value for s in JobState}
    assert set(typing.get_args(StateName)) == names  # the API's type of a state's name
    assert set(STATUS) == names  # Ray's status for each of gpuq's states
    assert set(STATE_COLOURS) == names


def test_the_api_asks_the_actor_only_what_it_offers():
    """The API calls the orchestrator by method name (serve_app/gateway.py); each name
    must be one the actor forwards (head/actor.py, PUBLIC)."""
    import re

    from orchestrator.head.actor import PUBLIC

    asked = set()
    for path in ROOT.glob("serve_app/**/*.py"):
        asked |= set(re.findall(r'\bcall\("([a-z_]+)"', path.read_text()))
    assert asked and asked <= set(PUBLIC), asked - set(PUBLIC)


def test_the_readmes_layout_names_every_module_and_script():
    """The README's layout table is where a reader looks for a module: each one, and
    each script, is named there (by its file name, in its row)."""
    import re

    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") : text.index("## Security")]
    named = set(re.findall(r"([A-Za-z0-9_.-]+\.(?:py|js|html|css))`", layout)) | set(
        re.findall(r"`([a-z-]+)`", layout)
    )
    files = [*ROOT.glob("orchestrator/**/*.py"), *ROOT.glob("serve_app/**/*.py"), *ROOT.glob("scripts/*")]
    missing = sorted(
        str(p.relative_to(ROOT))
        for p in files
        if p.is_file() and not p.name.startswith("_") and "__pycache__" not in p.parts and p.name not in named
    )
    assert not missing, f"not in the README's layout table: {missing}"
