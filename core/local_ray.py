"""Start Ray for a run: the cluster at RAY_ADDRESS when it is set, else a Ray on this machine bound to
loopback, without dashboard and with usage stats off. Shared by the floors that run work on Ray
(features: Feast's Ray offline store); no Ray import until called."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

log = logging.getLogger("propensity.ray")

# What a cluster's workers take from this process's environment: where the project is (its offline store,
# configs, registry) and the phone-home switches, off as here.
PROJECT_ENV = ("PROPENSITY_HOME", "PROPENSITY_CONFIGS", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY",
               "DO_NOT_TRACK", "FEAST_USAGE", "GIT_PYTHON_REFRESH")
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds to loopback (ray._private.ray_constants)


def start_ray(num_cpus: int | None = None, worker_env: Iterable[str] = PROJECT_ENV) -> bool:
    """Connect to RAY_ADDRESS or start a local Ray with ``num_cpus`` CPUs (None: every core); True when
    this call started or connected it. An already initialised Ray (a bench, a notebook) is used as it is.
    ``worker_env``: variables a cluster's workers get from this process (a local Ray inherits them)."""
    # Usage stats off before Ray starts (they are read at init), never at import time.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        # Node address 127.0.0.1, so every Ray server listens on loopback only. Ray reads the switch when
        # first imported; when a library imported ray before us, set the flag it was read into as well.
        os.environ[LOCAL_ONLY] = "0"
        if "ray" in sys.modules:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
    import ray

    if ray.is_initialized():
        return False
    if address:
        log.info("ray: connecting to the cluster at %s", address)
        env = {k: os.environ[k] for k in worker_env if k in os.environ}
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, configure_logging=False)
    else:
        cpus = num_cpus or os.cpu_count() or 1
        log.info("ray: starting a local Ray with %d CPUs (loopback, no dashboard)", cpus)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True
