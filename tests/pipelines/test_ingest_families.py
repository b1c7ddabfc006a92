"""Event families are declared once, in core.contract, and everything else iterates them: a new family
needs its Table there (and its features), not edits to the ingest, the column map, the CLI or the store."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from core.settings import REPO_ROOT

# A family the code has never heard of, declared the way core/contract.py declares its own.
NEW_FAMILY = """
import json, sys
from pathlib import Path
import pandas as pd
import core.contract as c

c.TABLES["returns"] = c.Table(
    "returns",
    id_column="return_id",
    time_column="returned_at",
    columns=(c.Column("return_id", c.STRING), c.Column("customer_id", c.STRING),
             c.Column("returned_at", c.TIMESTAMP), c.Column("reason", c.STRING)),
    description="Returned orders.",
)
import typer
from typer.testing import CliRunner
from pipelines.cli import ingest as cli_ingest
from pipelines.ingest import ColumnMap, ingest, validate_store

raw, store = Path(sys.argv[1]), Path(sys.argv[2])
raw.mkdir(parents=True)
(raw / "orders.csv").write_text("customer_id,ordered_at,amount\\nc1,2026-01-05,3.0\\nc2,2026-02-05,4.0\\n")
(raw / "customers.csv").write_text("customer_id,signup_at\\nc1,2025-12-01\\nc2,2025-12-02\\n")
(raw / "returns.csv").write_text("ticket,customer_id,returned_at,reason\\nr1,c1,2026-01-09,size\\n")
cmap = ColumnMap.model_validate({"returns": {"columns": {"return_id": "ticket"}}})
report = ingest(raw / "orders.csv", customers=raw / "customers.csv", returns=raw / "returns.csv",
                column_map=cmap, store=store)
app = typer.Typer()
cli_ingest.register(app)
help_text = CliRunner().invoke(app, ["ingest", "--help"]).output
bad = raw / "returns-of-strangers.csv"
bad.write_text("ticket,customer_id,returned_at,reason\\nr2,c9,2026-01-09,size\\n")
try:
    ingest(raw / "orders.csv", returns=bad, column_map=cmap, store=store)
    unknown = ""
except Exception as exc:
    unknown = str(exc)
print(json.dumps({
    "families": report.families,
    "added": report.rows_added(),
    "validated": {s.table: s.rows for s in validate_store(store)},
    "help_has_option": "--returns" in help_text,
    "unknown": unknown,
}))
"""


def test_a_new_family_needs_only_its_contract_entry(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", NEW_FAMILY, str(tmp_path / "raw"), str(tmp_path / "events")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["families"]["returns"] == "present"
    assert result["added"]["returns"] == 1
    assert result["validated"]["returns"] == 1
    assert result["help_has_option"]
    assert "returns" in result["unknown"] and "unknown customer" in result["unknown"]


def test_the_ingest_and_the_store_name_no_family():
    """Table names are spelt in core/contract.py only; the ingest and the store iterate TABLES (the CLI's
    options come from TABLES too: the new-family test above sees --returns)."""
    sources = [
        *sorted((REPO_ROOT / "pipelines" / "ingest").glob("*.py")),
        REPO_ROOT / "core" / "events.py",
        REPO_ROOT / "core" / "schemas.py",
    ]
    assert len(sources) > 5
    literal = re.compile(r"""["'](customers|orders|page_views|complaints)["']""")
    for path in sources:
        hits = [ln for ln in path.read_text().splitlines() if literal.search(ln)]
        assert not hits, f"{path.relative_to(REPO_ROOT)} names a family: {hits}"


def test_the_month_layout_lives_in_core_events_only():
    assert (REPO_ROOT / "pipelines" / "ingest" / "__init__.py").is_file()
    sources = [*sorted((REPO_ROOT / "pipelines" / "ingest").glob("*.py")), REPO_ROOT / "core" / "schemas.py"]
    for path in sources:
        assert "month=" not in path.read_text(), path
