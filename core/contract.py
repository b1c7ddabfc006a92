"""The event-log contract: the four canonical tables, their columns and types.

This module is the single definition of the canonical columns. The ingest validates foreign files into
these shapes (pandera schemas in ``core.schemas``), the event store writes them, and the feature
build reads them. See docs/data-contract.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIMESTAMP = "timestamp"  # stored as datetime64[us, UTC]: DuckDB 2 rejects nanosecond Parquet timestamps
STRING = "string"
FLOAT = "float64"
INT = "int64"

PAGE_TYPES = ("home", "category", "product", "cart", "checkout", "help", "other")
SEVERITIES = (1, 2, 3)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    required: bool = True  # required columns must be present; optional ones may be absent or null
    nullable: bool = False
    allowed: tuple | None = None  # the only values allowed (e.g. page types), None: any
    min_value: float | None = None  # inclusive lower bound for numbers


@dataclass(frozen=True)
class Table:
    name: str
    id_column: str | None  # unique per row (None: no natural id)
    time_column: str  # partitions the store by month and orders appends
    columns: tuple[Column, ...]
    extra_columns_allowed: bool = False  # customers and orders keep optional attributes
    required_table: bool = False
    # The ingest may derive the id when a file has none (a plain transaction log has no order ids).
    id_derivable: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_names(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


CUSTOMERS = Table(
    "customers",
    id_column="customer_id",
    time_column="signup_at",
    columns=(Column("customer_id", STRING), Column("signup_at", TIMESTAMP)),
    extra_columns_allowed=True,
)
ORDERS = Table(
    "orders",
    id_column="order_id",
    time_column="ordered_at",
    columns=(
        Column("order_id", STRING),
        Column("customer_id", STRING),
        Column("ordered_at", TIMESTAMP),
        Column("amount", FLOAT, min_value=0.0),
    ),
    extra_columns_allowed=True,
    required_table=True,
    id_derivable=True,
)
PAGE_VIEWS = Table(
    "page_views",
    id_column=None,
    time_column="viewed_at",
    columns=(
        Column("customer_id", STRING),
        Column("session_id", STRING),
        Column("viewed_at", TIMESTAMP),
        Column("page_type", STRING, allowed=PAGE_TYPES),
        Column("product_id", STRING, required=False, nullable=True),
    ),
)
COMPLAINTS = Table(
    "complaints",
    id_column="complaint_id",
    time_column="opened_at",
    columns=(
        Column("complaint_id", STRING),
        Column("customer_id", STRING),
        Column("opened_at", TIMESTAMP),
        Column("channel", STRING),
        Column("category", STRING),
        Column("severity", INT, allowed=SEVERITIES),
        Column("resolved_at", TIMESTAMP, required=False, nullable=True),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (CUSTOMERS, ORDERS, PAGE_VIEWS, COMPLAINTS)}
EVENT_FAMILIES = ("orders", "page_views", "complaints")
# Which timestamp must not precede which, per table: (earlier, later).
TIME_ORDER: dict[str, tuple[str, str]] = {"complaints": ("opened_at", "resolved_at")}


@dataclass
class Families:
    """Which tables a store holds: 'present', 'derived' (customers from orders) or 'absent'."""

    status: dict[str, str] = field(default_factory=dict)

    def present(self, table: str) -> bool:
        return self.status.get(table, "absent") != "absent"
