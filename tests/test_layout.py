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
