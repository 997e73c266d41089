"""Joining a Ray cluster: what ``seqtag tag --ray``, ``seqtag train ... --workers N --ray`` and ``seqtag tune`` share.

``--ray ADDRESS`` joins a running cluster (``ray start --head`` on one machine, ``ray start --address ...`` on the
others; every node needs seqtag installed and the data files at the same path). ``--ray auto`` finds the cluster
this machine belongs to (Ray's ``RAY_ADDRESS`` or the latest ``ray start`` here). ``--ray local`` starts a cluster
of this process's own, for a laptop: it ends with the command.
"""

from __future__ import annotations

import logging
from typing import Mapping

from training.common.errors import ConfigError

logger = logging.getLogger(__name__)


def connect(address: str, env_vars: Mapping[str, str] | None = None, log_to_driver: bool = False):
    """The ``ray`` module, connected to the cluster ``address`` names (``local``: a new one of this process's own).
    ``env_vars``: set in every process this job starts on the cluster (Ray's runtime environment), e.g. the Keras
    backend its training workers run. ``log_to_driver``: the cluster's processes' logs in this one's (a training run's epochs)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError("--ray needs Ray: pip install 'seqtag[ray]'") from None

    if ray.is_initialized():
        return ray
    options = {"logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    if env_vars:
        options["runtime_env"] = {"env_vars": dict(env_vars)}
    if address == "local":  # a cluster of this process's own, for a laptop
        ray.init(include_dashboard=False, **options)
    else:
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            raise ConfigError(f"--ray {address}: no Ray cluster there ({error}); start one with 'ray start --head', "
                              "or give --ray local") from None
    return ray
