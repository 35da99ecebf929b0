"""The ``mesh`` command line: one group, its commands kept by concern.

``run`` (simulate, materialize, dev), ``explore`` (validate, catalog, search, quotas, usage, lineage),
``governance`` (audit, quarantine, policies, iam), ``dbt``, ``selfserve`` (new, grants, reports),
``contract`` (diff, check, export), ``stack``, ``helm``, ``serve`` (serve, tokens); what they share
(the settings read once per command, the sources, the loaded mesh) is in :mod:`.common`.
"""

from __future__ import annotations

import click

from mesh_platform.cli.contract import contract
from mesh_platform.cli.dbt import dbt
from mesh_platform.cli.explore import catalog, lineage, quotas, search, usage, validate
from mesh_platform.cli.governance import audit, iam, policies, quarantine
from mesh_platform.cli.helm import helm
from mesh_platform.cli.run import dev, materialize, simulate
from mesh_platform.cli.selfserve import grants, new, reports
from mesh_platform.cli.serve import serve, tokens
from mesh_platform.cli.stack import stack


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the data mesh: domains are Dagster code locations, products are contract-checked assets."""


for command in (validate, simulate, materialize, catalog, search, audit, quotas, usage, quarantine, policies, iam, lineage, dbt, dev,
                new, grants, reports, contract, stack, helm, serve, tokens):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
