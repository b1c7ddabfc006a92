"""Writing the raw exports: the four tables a business would hand over, and the ground truth apart from them.

Tables are written in chunks (a row group per chunk), so memory stays bounded at any size. Every file goes
to a hidden temporary sibling (``core.io.atomic_path``) and all of them replace the earlier files together
when the run ends well: a failed run leaves earlier output as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.contract import PAGE_TYPES
from core.io import atomic_path
from core.settings import GROUND_TRUTH_FILE
from pipelines.synthetic.simulate import US_PER_DAY, EventSink, Simulation
from pipelines.synthetic.traits import (
    ACQUISITION_CHANNELS,
    N_PRODUCT_CATEGORIES,
    PRODUCTS_PER_CATEGORY,
    REGIONS,
)
from pipelines.synthetic.truth import CHURN_DRIVERS, CONVERT_DRIVERS

TABLE_FILES = ("customers", "orders", "page_views", "complaints")


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Zero-padded string ids ('C0000042') built in Arrow: formatting millions of ids in Python is slow."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.timestamp("us", tz="UTC"))


_DICTIONARY_COLUMNS = {"page_type", "product_id", "channel", "category", "region", "acquisition_channel"}
_DICTIONARY_COLUMNS |= {"churn_driver", "convert_driver", "as_of", "severity", "action_rule", "list_as_of", "group"}


class TableWriter:
    """Writes one table in chunks (a row group per chunk) so memory stays bounded at any size."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self.path, self.schema, self.fmt, self.rows = path, schema, fmt, 0
        if fmt == "parquet":
            # Dictionary-encode only repetitive columns: unique ids gain nothing and cost write time.
            low_cardinality = [n for n in schema.names if n in _DICTIONARY_COLUMNS]
            self._writer = pq.ParquetWriter(
                path, schema, compression="snappy", use_dictionary=low_cardinality
            )
        else:
            self._writer = pa_csv.CSVWriter(path, schema)

    def write(self, columns: dict[str, pa.Array]) -> None:
        table = pa.table(columns, schema=self.schema)
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()


_TS = pa.timestamp("us", tz="UTC")
SCHEMAS = {
    "customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("signup_at", _TS),
            ("region", pa.string()),
            ("acquisition_channel", pa.string()),
        ]
    ),
    "orders": pa.schema(
        [
            ("order_id", pa.string()),
            ("customer_id", pa.string()),
            ("ordered_at", _TS),
            ("amount", pa.float64()),
            ("channel", pa.string()),
        ]
    ),
    "page_views": pa.schema(
        [
            ("customer_id", pa.string()),
            ("session_id", pa.string()),
            ("viewed_at", _TS),
            ("page_type", pa.string()),
            ("product_id", pa.string()),
        ]
    ),
    "complaints": pa.schema(
        [
            ("complaint_id", pa.string()),
            ("customer_id", pa.string()),
            ("opened_at", _TS),
            ("channel", pa.string()),
            ("category", pa.string()),
            ("severity", pa.int64()),
            ("resolved_at", _TS),
        ]
    ),
    "contacts": pa.schema(
        [
            ("contact_id", pa.string()),
            ("customer_id", pa.string()),
            ("contacted_at", _TS),
            ("action_rule", pa.string()),
            ("list_as_of", _TS),
            ("channel", pa.string()),
        ]
    ),
    "campaign_truth": pa.schema(
        [
            ("customer_id", pa.string()),
            ("as_of", _TS),
            ("action_rule", pa.string()),
            ("group", pa.string()),
            ("p_churn_untreated", pa.float64()),  # P(no order in 60 days) without the contact
            ("p_churn_treated", pa.float64()),  # ... with it
        ]
    ),
    "ground_truth": pa.schema(
        [
            ("customer_id", pa.string()),
            ("as_of", _TS),
            ("p_churn", pa.float64()),
            ("p_convert", pa.float64()),
            ("churn_driver", pa.string()),
            ("convert_driver", pa.string()),
        ]
    ),
}


def export_files(out: Path, fmt: str, anomalies: bool = False, campaigns: bool = False) -> dict[str, Path]:
    """Where a run writes each table in ``out``; the ground truth (and the anomaly labels, the campaigns'
    truth) always Parquet. Contacts only when the shop runs campaigns."""
    ext = "parquet" if fmt == "parquet" else "csv"
    files = {name: out / f"{name}.{ext}" for name in TABLE_FILES}
    files["ground_truth"] = out / GROUND_TRUTH_FILE
    if campaigns:
        from pipelines.synthetic.campaigns import CAMPAIGN_TRUTH_FILE

        files["contacts"] = out / f"contacts.{ext}"
        files["campaign_truth"] = out / CAMPAIGN_TRUTH_FILE
    if anomalies:
        from pipelines.synthetic.anomalies import ANOMALIES_FILE

        files["anomalies"] = out / ANOMALIES_FILE
    return files


class RawExport:
    """Writers of one run's files (at their temporary paths) and the id and code tables they share."""

    def __init__(self, sim: Simulation, files: dict[str, Path], temps: dict[str, Path], fmt: str, anomalies=None):
        self.sim, self.fmt, self.files, self._temps = sim, fmt, files, temps
        self.anomalies = anomalies  # an anomalies.Injector (--anomalies) or None
        self.writers = {
            name: TableWriter(temps[name], SCHEMAS[name], fmt)
            for name in ("orders", "page_views", "complaints")
        }
        truth_schema = SCHEMAS["ground_truth"]
        if "contacts" in temps:  # with campaigns: also the risk had no contact acted (a model of untreated behaviour)
            truth_schema = truth_schema.append(pa.field("p_churn_untreated", pa.float64()))
        self.truth_writer = TableWriter(temps["ground_truth"], truth_schema, "parquet")
        if "contacts" in temps:
            self.writers["contacts"] = TableWriter(temps["contacts"], SCHEMAS["contacts"], fmt)
            self.campaign_writer = TableWriter(temps["campaign_truth"], SCHEMAS["campaign_truth"], "parquet")
        else:
            self.campaign_writer = None
        accounts = sim.n if anomalies is None else anomalies.accounts
        width = max(sim.id_width, len(str(accounts)))
        self.customer_ids = _ids("C", np.arange(1, accounts + 1), width)
        self.label_writer = None
        if anomalies is not None:
            from pipelines.synthetic.anomalies import LABEL_SCHEMA

            self.label_writer = TableWriter(temps["anomalies"], LABEL_SCHEMA, "parquet")
        self.page_types = pa.array(PAGE_TYPES)
        products = np.arange(N_PRODUCT_CATEGORIES * PRODUCTS_PER_CATEGORY)
        self.product_ids = _ids("P", products + 1, 5)
        self.last_day = sim.days - 1
        self.customer_rows = 0

    def rows(self) -> dict[str, int]:
        """Rows written per file, in the order of ``files``."""
        rows = {"customers": self.customer_rows}
        rows.update({name: w.rows for name, w in self.writers.items()})
        rows["ground_truth"] = self.truth_writer.rows
        if self.campaign_writer is not None:
            rows["campaign_truth"] = self.campaign_writer.rows
        if self.label_writer is not None:
            rows["anomalies"] = self.label_writer.rows
        return rows

    def _inject(self, table: str, made: tuple[list[dict], list[dict]]) -> None:
        """Write the anomalies' rows after the chunk's genuine ones, and their labels."""
        rows, labels = made
        for columns in rows:
            self.writers[table].write(columns)
        for columns in labels:
            self.label_writer.write(columns)

    def _us(self, day, sec) -> np.ndarray:
        return (
            self.sim.start_us + np.asarray(day, np.int64) * US_PER_DAY + np.asarray(sec, np.int64) * 1_000_000
        )

    def _cust(self, cust) -> pa.Array:
        return pc.take(self.customer_ids, pa.array(np.asarray(cust, np.int64)))

    def flush(self, sink: EventSink, through_day: int | None = None) -> None:
        """Write the sink's events (one chunk per table) and empty it; ``through_day``: the chunk's last
        day (for the bots' traffic of --anomalies)."""
        injector = self.anomalies
        if injector is not None:
            self._inject("page_views", injector.bot_views(self, self.last_day if through_day is None else through_day))
        if sink.page_views:
            cust = np.concatenate([p[0] for p in sink.page_views])
            session = np.concatenate([p[1] for p in sink.page_views])
            day = np.concatenate([np.full(len(p[0]), p[2]) for p in sink.page_views])
            sec = np.concatenate([p[3] for p in sink.page_views])
            pages = np.concatenate([p[4] for p in sink.page_views])
            product = np.concatenate([p[5] for p in sink.page_views])
            self.writers["page_views"].write(
                {
                    "customer_id": self._cust(cust),
                    "session_id": _ids("S", session + 1, 10),
                    "viewed_at": _timestamps(self._us(day, sec)),
                    "page_type": pc.take(self.page_types, pa.array(pages)),
                    "product_id": pc.take(self.product_ids, pa.array(product, mask=product < 0)),
                }
            )
            if injector is not None:
                self._inject("page_views", injector.short_views(self, cust, session, self._us(day, sec), day))
        if sink.orders:
            order_no = np.concatenate([o[0] for o in sink.orders])
            cust = np.concatenate([o[1] for o in sink.orders])
            day = np.concatenate([o[2] for o in sink.orders])
            sec = np.concatenate([o[3] for o in sink.orders])
            us = self._us(day, sec)
            sort = np.argsort(us, kind="stable")
            amount = np.concatenate([o[4] for o in sink.orders])[sort]
            channel = np.concatenate([o[5] for o in sink.orders])[sort]
            order_ids = _ids("O", order_no[sort] + 1, 9)
            self.writers["orders"].write(
                {
                    "order_id": order_ids,
                    "customer_id": self._cust(cust[sort]),
                    "ordered_at": _timestamps(us[sort]),
                    "amount": pa.array(amount),
                    "channel": pc.take(pa.array(["web", "store"]), pa.array(channel)),
                }
            )
            if injector is not None:
                self._inject("orders", injector.orders(self, order_ids, cust[sort], us[sort], amount, channel))
        if sink.complaints:
            cols = [np.concatenate([c[i] for c in sink.complaints]) for i in range(8)]
            number, cust, open_day, open_sec, channel, category, severity, resolved_us = cols
            # Only complaints opened inside the window exist in the export; later resolutions are unknown.
            inside = open_day <= self.last_day
            opened_us = self._us(open_day, open_sec)
            resolved_abs = self._us(open_day, 0) + resolved_us
            export_end_us = self._us(self.last_day + 1, 0)
            unresolved = (resolved_us < 0) | (resolved_abs >= export_end_us)
            m = inside
            self.writers["complaints"].write(
                {
                    "complaint_id": _ids("K", number[m] + 1, 8),
                    "customer_id": self._cust(cust[m]),
                    "opened_at": _timestamps(opened_us[m]),
                    "channel": pc.take(pa.array(self.sim.channels[0]), pa.array(channel[m])),
                    "category": pc.take(pa.array(self.sim.categories[0]), pa.array(category[m])),
                    "severity": pa.array(severity[m].astype(np.int64)),
                    "resolved_at": pa.array(resolved_abs[m], type=pa.int64(), mask=unresolved[m]).cast(_TS),
                }
            )
            if injector is not None:
                made = injector.complaints(
                    self, cust[m], opened_us[m], channel[m], category[m], severity[m], resolved_abs[m], unresolved[m]
                )
                self._inject("complaints", made)
        sink.page_views.clear()
        sink.orders.clear()
        sink.complaints.clear()

    def write_truth(self, day: int, p_churn, p_convert, churn_driver, convert_driver, p_churn_untreated=None) -> None:
        n = len(p_churn)
        columns = {
            "customer_id": self.customer_ids.slice(0, n),
            "as_of": _timestamps(np.full(n, self._us(day, 0))),
            "p_churn": pa.array(p_churn),
            "p_convert": pa.array(p_convert),
            "churn_driver": pc.take(pa.array(CHURN_DRIVERS), pa.array(churn_driver)),
            "convert_driver": pc.take(pa.array(CONVERT_DRIVERS), pa.array(convert_driver)),
        }
        if p_churn_untreated is not None:
            columns["p_churn_untreated"] = pa.array(p_churn_untreated)
        self.truth_writer.write(columns)

    def write_contacts(self, day: int, numbers, cust, sec, rule: str, channel: str) -> None:
        """One campaign's contacts of ``day``: the CRM's export (contacted customers only)."""
        n = len(cust)
        self.writers["contacts"].write(
            {
                "contact_id": _ids("M", np.asarray(numbers) + 1, 9),
                "customer_id": self._cust(cust),
                "contacted_at": _timestamps(self._us(np.full(n, day), sec)),
                "action_rule": pa.array([rule] * n, type=pa.string()),
                "list_as_of": _timestamps(np.full(n, self._us(day, 0))),
                "channel": pa.array([channel] * n, type=pa.string()),
            }
        )

    def write_campaign_truth(self, day: int, cust, rule: str, group, untreated, treated) -> None:
        """One campaign's list of ``day``: every listed customer, the group, both exact probabilities."""
        n = len(cust)
        self.campaign_writer.write(
            {
                "customer_id": self._cust(cust),
                "as_of": _timestamps(np.full(n, self._us(day, 0))),
                "action_rule": pa.array([rule] * n, type=pa.string()),
                "group": pa.array(np.asarray(group, dtype=object), type=pa.string()),
                "p_churn_untreated": pa.array(np.asarray(untreated, dtype=float)),
                "p_churn_treated": pa.array(np.asarray(treated, dtype=float)),
            }
        )

    def write_customers(self) -> int:
        """The customers table, one row per customer in one chunk."""
        sim = self.sim
        us = self._us(sim.traits.signup_day, sim.traits.signup_sec)
        writer = TableWriter(self._temps["customers"], SCHEMAS["customers"], self.fmt)
        writer.write(
            {
                "customer_id": self.customer_ids.slice(0, sim.n),
                "signup_at": _timestamps(us),
                "region": pc.take(pa.array(REGIONS), pa.array(sim.traits.region)),
                "acquisition_channel": pc.take(
                    pa.array(ACQUISITION_CHANNELS), pa.array(sim.traits.acquisition)
                ),
            }
        )
        if self.anomalies is not None and len(self.anomalies.bots):
            writer.write(self.anomalies.bot_customers(self))  # the bots' accounts
        writer.close()
        self.customer_rows = writer.rows
        return writer.rows

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.truth_writer.close()
        if self.campaign_writer is not None:
            self.campaign_writer.close()
        if self.label_writer is not None:
            self.label_writer.close()


@contextmanager
def raw_export(sim: Simulation, out: Path, fmt: str, anomalies=None) -> Iterator[RawExport]:
    """A ``RawExport`` into ``out``: its files replace the earlier ones only when the block ends well.
    ``anomalies``: an ``anomalies.Injector`` (--anomalies), which adds its labels file."""
    files = export_files(out, fmt, anomalies is not None, bool(sim.cfg.campaigns))
    with ExitStack() as stack:
        temps = {name: stack.enter_context(atomic_path(path)) for name, path in files.items()}
        export = RawExport(sim, files, temps, fmt, anomalies)
        yield export
        export.close()  # before the renames: a Parquet file is complete only with its footer
