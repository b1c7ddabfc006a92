"""The event-log contract: the canonical tables, their columns and types.

This module is the one place a table is declared: its columns, time column, id, whether the table is
required, how two of its timestamps are ordered. Everything else iterates ``TABLES``: the column map,
the ingest, its CLI options, the pandera schemas (``core.schemas``), the event store and ``validate``.
A new event family is one more ``Table`` here (plus its features). See docs/data-contract.md.
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
    # A required column must be in every file. An optional one may be missing from a file: it is then
    # stored as nulls, so the store allows nulls in it whatever ``nullable`` says.
    required: bool = True
    nullable: bool = False  # may a file that has the column leave a value empty?
    allowed: tuple | None = None  # the only values allowed (e.g. page types), None: any
    min_value: float | None = None  # inclusive lower bound for numbers


@dataclass(frozen=True)
class Table:
    name: str
    id_column: str | None  # unique per row (None: no natural id)
    time_column: str  # partitions the store by month and orders appends
    columns: tuple[Column, ...]
    description: str = ""  # one line for the CLI's --help
    extra_columns_allowed: bool = False  # customers and orders keep optional attributes
    required_table: bool = False
    # The ingest may derive the id when a file has none (a plain transaction log has no order ids).
    id_derivable: bool = False
    # The entity table (customers): every event names one of its rows; derived from events when absent.
    entity: bool = False
    # (earlier, later): the later timestamp, when present, must not precede the earlier one.
    time_order: tuple[str, str] | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_names(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def timestamp_names(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == TIMESTAMP]

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
    description="Customers file; without it customers are derived from the events.",
    extra_columns_allowed=True,
    entity=True,
)
ORDERS = Table(
    "orders",
    id_column="order_id",
    time_column="ordered_at",
    columns=(
        Column("order_id", STRING),
        Column("customer_id", STRING),
        Column("ordered_at", TIMESTAMP),
        # Optional: a log of who bought when is enough (spend features are then null). A file that has
        # the column must fill it.
        Column("amount", FLOAT, required=False, min_value=0.0),
    ),
    description="Orders file (CSV or Parquet): the only required table.",
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
    description="Page-view file (browse behaviour).",
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
    description="Complaints file.",
    time_order=("opened_at", "resolved_at"),
)

CONTACTS = Table(
    "contacts",
    id_column="contact_id",
    time_column="contacted_at",
    columns=(
        Column("contact_id", STRING),
        Column("customer_id", STRING),
        Column("contacted_at", TIMESTAMP),
        Column("action_rule", STRING),  # the follow-up list's rule that asked for the contact
        Column("list_as_of", TIMESTAMP, required=False, nullable=True),  # the list's date
        Column("channel", STRING, required=False, nullable=True),
        Column("outcome", STRING, required=False, nullable=True),
    ),
    description="Contacts the CRM made from a follow-up list (who, when, which rule; optional channel, outcome).",
    id_derivable=True,
)

TABLES: dict[str, Table] = {t.name: t for t in (CUSTOMERS, ORDERS, PAGE_VIEWS, COMPLAINTS, CONTACTS)}
ENTITY_KEY = "customer_id"  # the column every table carries: the customer a row belongs to


def entity_table() -> Table:
    """The customers table (the one ``entity`` table)."""
    return next(t for t in TABLES.values() if t.entity)


def event_tables() -> list[Table]:
    """Every table but the entity table, in declaration order: the event families."""
    return [t for t in TABLES.values() if not t.entity]


# Derived views of TABLES for callers that want plain names (read at import: a table added to TABLES
# later, as a test does, is seen by the functions above but not by these).
EVENT_FAMILIES = tuple(t.name for t in event_tables())
TIME_ORDER: dict[str, tuple[str, str]] = {t.name: t.time_order for t in TABLES.values() if t.time_order}


@dataclass
class Families:
    """Which tables a store holds: 'present', 'derived' (customers from orders) or 'absent'."""

    status: dict[str, str] = field(default_factory=dict)

    def present(self, table: str) -> bool:
        return self.status.get(table, "absent") != "absent"
