"""Logging set-up: rich handler on stderr, one call from each entry point (never at import)."""

from __future__ import annotations

import logging
import warnings


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(rich_tracebacks=False, show_path=False, markup=False)],
        force=True,
    )
    # The stack is chatty at INFO; keep our own messages readable.
    for noisy in ("feast", "mlflow", "alembic", "bentoml", "urllib3", "httpx", "numexpr", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Deprecations inside the stack (ibis on duckdb 2, SQLAlchemy in mlflow, pathspec in bentoml) are
    # not actionable for users of this tool.
    for module in ("pathspec", "ibis", "mlflow", "sqlalchemy", "feast", "bentoml"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    warnings.filterwarnings("ignore", message=".*noload.*")
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*")
    # Some of the stack re-installs its own warning filters after import; routing warnings through
    # logging keeps them out of the user's terminal unless --verbose asks for them.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)
