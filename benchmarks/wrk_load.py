"""Load from ``wrk`` (Debian's package: ``apt-get install wrk``; a C load generator, one thread): run it with one
of the Lua scripts in ``benchmarks/wrk/`` and read the summary line they print.

Used by ``benchmarks.http_matrix`` and ``benchmarks.session_load``. Requests per second, p50/p90/p99 latency
(wrk's own histogram, microseconds) and errors of one run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent / "wrk"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # connect, read, write errors and timeouts
    non_2xx: int  # answers with a status >= 400

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def require_wrk() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("benchmarks need wrk, a C HTTP load generator: apt-get install wrk (Debian's package)")
    return binary


def run_wrk(url: str, script: str, connections: int, seconds: float, script_args: list[str] = (),
            threads: int = 1, timeout_s: float = 10.0) -> WrkResult:
    """One wrk run of ``seconds`` (rounded to whole seconds, at least 1: wrk reads no fractions) against ``url``
    with ``benchmarks/wrk/<script>``."""
    command = [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:g}s",
               "-s", str(SCRIPTS / script), url]
    if script_args:
        command += ["--", *script_args]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in completed.stdout.splitlines() if l.startswith("WRK_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout[-500:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(data["requests"], data["duration_us"] / 1e6, data["p50_us"] / 1000, data["p90_us"] / 1000,
                     data["p99_us"] / 1000, data["errors"], data["non_2xx"])
