"""The bad-input corpus (issue 8 item 6): every malformed input in ``cases/`` is refused cleanly.

For each case folder (see ``make_corpus.py`` for the ``case.json`` keys) the ``vbiopsy`` command
runs in-process through typer's ``CliRunner`` (stdout and stderr captured separately), and:

* exits with the expected non-zero code;
* prints exactly one ``error:`` / ``problem:`` line on stderr, matching the case's regex (which
  names the file / row / key and the problem), and nothing of the kind on stdout;
* shows no traceback and raises nothing but ``SystemExit``;
* leaves no output behind (``out`` absent or empty, or holding only what was there before) and
  does not touch the corpus itself.

Cases marked ``subprocess`` also run as a real ``python -m vbiopsy.cli`` process, which must give
the same exit code and the same error line: the check that the in-process runner sees what a user
sees. Cases marked ``xfail`` fail today in files this corpus does not own; the reason says where.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vbiopsy.cli import app
from vbiopsy.commands import console

CASES = Path(__file__).resolve().parent / "cases"
ERROR_PREFIXES = ("error:", "problem:")


@dataclass(frozen=True)
class Outcome:
    """What one run of the command showed."""

    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(ERROR_PREFIXES)]


def load_cases() -> list[Any]:
    """One pytest param per case folder (strict xfail where the case says why it fails today)."""
    params = []
    for folder in sorted(p for p in CASES.iterdir() if (p / "case.json").is_file()):
        spec = json.loads((folder / "case.json").read_text())
        marks = [pytest.mark.xfail(reason=spec["xfail"], strict=True)] if spec.get("xfail") else []
        params.append(pytest.param(folder, spec, id=folder.name, marks=marks))
    return params


def fill(value: str, case: Path, tmp: Path) -> str:
    return value.replace("{case}", str(case)).replace("{tmp}", str(tmp))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folder``: the corpus must come out untouched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
"""Warning categories Python does not show a user by default; any other warning is noise on stderr."""


def run_in_process(args: list[str]) -> Outcome:
    """Invoke the CLI in this process; Python warnings that a user would see are appended to stderr
    (the runner does not capture them, a terminal shows them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, args)
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, HIDDEN_BY_DEFAULT)]
    exception = None if isinstance(result.exception, SystemExit) else result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr + "".join(f"{w}\n" for w in shown), exception)


def run_subprocess(args: list[str], cwd: Path) -> Outcome:
    env = {**os.environ, "COLUMNS": str(console.width), "OMP_NUM_THREADS": "1"}  # tables wrap as in-process
    proc = subprocess.run([sys.executable, "-m", "vbiopsy.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_refusal(outcome: Outcome, spec: dict[str, Any], how: str) -> str:
    """The checks every case must pass; returns the one error line."""
    everything = outcome.stdout + outcome.stderr
    assert outcome.exception is None, f"{how}: raised {outcome.exception!r}\n{everything}"
    assert "Traceback" not in everything, f"{how}: traceback\n{everything}"
    assert "Warning: " not in outcome.stderr, f"{how}: warning printed beside the error\n{outcome.stderr}"
    assert outcome.exit_code == spec["exit_code"], f"{how}: exit {outcome.exit_code}\n{everything}"
    lines = outcome.error_lines
    assert len(lines) == 1, f"{how}: expected one error line, got {lines}\n{everything}"
    assert not [line for line in outcome.stdout.splitlines() if line.startswith(ERROR_PREFIXES)], \
        f"{how}: error printed on stdout\n{outcome.stdout}"
    assert re.search(spec["error"], lines[0]), f"{how}: {lines[0]!r} does not match {spec['error']!r}"
    return lines[0]


def text_line(line: str) -> str:
    """A stderr line without progress-bar drawing and timings (they differ between runs)."""
    return "" if "━" in line else line.rstrip()


def assert_no_output(spec: dict[str, Any], out: Path | None) -> None:
    if out is None or not out.exists():
        return
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == sorted(spec.get("seed_out", {})), f"output left behind in {out}: {left}"


def prepare(spec: dict[str, Any], case: Path, tmp: Path) -> tuple[list[str], Path | None]:
    """Create the case's folders and pre-existing output; return its arguments and output path."""
    for folder in spec.get("mkdir", []):
        Path(fill(folder, case, tmp)).mkdir(parents=True)
    out = Path(fill(spec["out"], case, tmp)) if spec.get("out") else None
    for name, text in spec.get("seed_out", {}).items():
        assert out is not None
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return [fill(a, case, tmp) for a in spec["args"]], out


def test_corpus_is_big_enough_and_small_on_disk() -> None:
    cases = [p for p in CASES.iterdir() if (p / "case.json").is_file()]
    size = sum(p.stat().st_size for p in CASES.rglob("*") if p.is_file())
    assert len(cases) >= 40 and size < 1_000_000, (len(cases), size)


@pytest.mark.parametrize(("case", "spec"), load_cases())
def test_bad_input_is_refused_cleanly(case: Path, spec: dict[str, Any], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)  # a command that writes into the working folder is caught too
    before = snapshot(case)
    args, out = prepare(spec, case, tmp_path / "in-process")
    with caplog.at_level(logging.WARNING):
        in_process = run_in_process(args)
    line = assert_clean_refusal(in_process, spec, "in-process")
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert not logged, f"log messages reach stderr beside the error line: {logged}"
    assert_no_output(spec, out)
    if spec.get("subprocess"):
        args, out = prepare(spec, case, tmp_path / "subprocess")
        real = run_subprocess(args, tmp_path)
        assert assert_clean_refusal(real, spec, "subprocess") == line.replace("in-process", "subprocess")
        assert_no_output(spec, out)
        seen = {text_line(x) for x in in_process.stderr.splitlines()}
        extra = [x for x in real.stderr.splitlines() if text_line(x.replace("subprocess", "in-process")) not in seen]
        assert not extra, f"the real process printed lines the in-process run did not: {extra}"
    assert snapshot(case) == before, "the command modified the corpus"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p for p in ("in-process", "subprocess") if (tmp_path / p).exists()), "files written to the working folder"
