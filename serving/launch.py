"""`python -m serving.launch serve ...`: BentoML's own `bentoml serve` command, with a Prometheus folder
of its own for this server process.

`bentoml serve` keeps the workers' metrics files in BENTOML_HOME/prometheus_multiproc_dir and empties that
folder when it starts; it then hands the folder to its workers as PROMETHEUS_MULTIPROC_DIR, overriding
any value in the environment. BENTOML_HOME is inside the project, so a second `propensity serve` in the
same project (another port, a bench run) wiped the first one's metrics. BentoML has no setting for the
folder other than BENTOML_HOME; its path comes from the container provider
``BentoMLContainer.prometheus_multiproc_dir``, which this launcher sets before running the command:
BENTOML_HOME/prometheus/<pid>, removed when the server ends; folders of servers that died without
cleaning up are removed when the next one starts.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def metrics_root() -> Path:
    home = os.environ.get("BENTOML_HOME")
    if not home:
        from core.settings import project_paths

        home = str(project_paths().root / "bentoml_home")
    return Path(home) / "prometheus"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def metrics_dir_for(pid: int, clean_stale: bool = False) -> Path:
    """The metrics folder of server process ``pid``; with ``clean_stale``, first remove the folders of
    processes that no longer run (a server killed with SIGKILL leaves its folder behind)."""
    root = metrics_root()
    if clean_stale and root.is_dir():
        for folder in root.iterdir():
            if folder.name.isdigit() and int(folder.name) != pid and not _alive(int(folder.name)):
                shutil.rmtree(folder, ignore_errors=True)
    return root / str(pid)


def main(argv: list[str] | None = None) -> int:
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    folder = metrics_dir_for(os.getpid(), clean_stale=True)
    folder.mkdir(parents=True, exist_ok=True)
    BentoMLContainer.prometheus_multiproc_dir.set(str(folder))
    try:
        cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="bentoml")  # exits itself
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
