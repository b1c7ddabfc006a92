"""Schemathesis against a real `propensity serve` (the `server` fixture: bentoml serve on 127.0.0.1 over a
tiny trained project): cases generated from the service's own OpenAPI document (/docs.json), valid and
invalid, on every operation; no answer may be a server error (5xx), and each must match the document
(status, content type, response schema). A few hundred cases, bounded by --max-examples per phase and
operation and by --max-time for the whole run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serving.conftest import SERVER_KEY

pytestmark = pytest.mark.slow

# The checks that must hold on every case (schemathesis names; `schemathesis explain` describes them).
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
])


def test_generated_requests_get_no_server_error(server, tmp_path):
    report = tmp_path / "schemathesis.ndjson"
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--no-color", "run", f"{server['base']}/docs.json",
        "--checks", CHECKS,
        "--header", f"X-API-Key: {SERVER_KEY}",
        "--max-examples", "25",  # per operation and phase
        "--max-time", "100",  # seconds, for the whole run
        "--seed", "20261201",
        "--workers", "1",
        "--request-timeout", "10",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    print(result.stdout[-6000:])
    cases = _count_cases(report)
    print(f"schemathesis: {cases} cases in {elapsed:.0f} s, exit code {result.returncode}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert cases >= 200, f"only {cases} cases were generated"
    assert "Server error" not in result.stdout


def _count_cases(report: Path) -> int:
    """Test cases the run sent: one ``ScenarioFinished``-style event per case in the ndjson report."""
    total = 0
    if not report.exists():
        return 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        for kind, body in event.items():
            if kind == "ScenarioFinished" and isinstance(body, dict):
                total += len((body.get("recorder") or {}).get("cases", {}) or {})
    return total
