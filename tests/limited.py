"""Run a snippet in a fresh Python whose address space is capped a little above what its imports
took, for the tests of "small input, huge memory" cases: a regression then dies with a
MemoryError in the child instead of swapping the machine."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

_PRELUDE = """
import resource, sys
def _vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
limit = _vm_bytes() + {headroom}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
"""


def run_limited(imports: str, code: str, *, headroom_mb: int = 768,
                timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``imports`` freely, then ``code`` with at most ``headroom_mb`` MiB more address
    space; returns the finished process (stdout, stderr as text)."""
    script = (textwrap.dedent(imports) + _PRELUDE.format(headroom=headroom_mb << 20)
              + textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """``robustfair ARGV`` in this process: (exit code, stderr)."""
    code, _, err = cli_all(argv, capsys)
    return code, err


def cli_all(argv: list[str], capsys) -> tuple[int, str, str]:
    """``robustfair ARGV`` in this process: (exit code, stdout, stderr)."""
    from robustfair.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    """Exit 2 and exactly one ``robustfair: error:`` line naming ``fragment``, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustfair: error:"), err
    assert fragment in lines[0], err
    assert "Traceback" not in err
