"""Ingest: foreign event exports (CSV or Parquet) -> the canonical event store.

One call of :func:`ingest` reads every file given, maps foreign column names and date formats (the column
map), parses each column into its canonical type, validates the result against the pandera schemas,
and then, holding the store lock, checks that events belong to known customers and merges the new rows
into the store's month partitions in one atomic commit (``EventStore.replace_months``). Any problem
anywhere raises one ``DataError`` that lists every problem found, and nothing of that run is written.

Before anything is merged, the cleaning rules (``configs/cleaning.yaml``) remove what is not customer
behaviour (bots, short views, test orders and accounts, cancellations, duplicates, rows missing a key
field); those rows go to the quarantine beside the store with the rule that removed them.

Merging is idempotent: a row whose id (page views: whose full row) is already stored with the same values
is counted as already present and rewrites nothing; a stored id with different values is replaced (an
export that now carries a complaint's ``resolved_at``), in the columns the export has; new ids are
appended to their months.

Modules, by job:

- ``columns``: the column map (``ColumnMap``, ``load_column_map``) and applying it to a file's columns
- ``files``: reading one file; CSV structure and Parquet string checks
- ``parse``: parsing values into contract types, time range, missing values, order lines (``read_source``)
- ``cleaning``: the cleaning rules (``CleaningConfig``, ``load_cleaning_config``, ``clean_table``)
- ``quarantine``: the rows the rules removed, beside the store
- ``plan``: known / derived customers, de-duplication, month planning (``plan_table``)
- ``commit``: the :func:`ingest` entry point and its report
- ``validate``: :func:`validate_store`
"""

from pipelines.ingest.cleaning import CleaningConfig, clean_table, load_cleaning_config
from pipelines.ingest.columns import ColumnMap, TableMap, load_column_map
from pipelines.ingest.commit import IngestReport, TableResult, ingest
from pipelines.ingest.parse import Source, read_source
from pipelines.ingest.plan import TablePlan, already_stored, drop_repeated_rows, plan_table
from pipelines.ingest.validate import TableSummary, validate_store

__all__ = [
    "CleaningConfig",
    "ColumnMap",
    "IngestReport",
    "Source",
    "TableMap",
    "TablePlan",
    "TableResult",
    "TableSummary",
    "already_stored",
    "clean_table",
    "drop_repeated_rows",
    "ingest",
    "load_cleaning_config",
    "load_column_map",
    "plan_table",
    "read_source",
    "validate_store",
]
