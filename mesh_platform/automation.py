"""SLAs become Dagster freshness policies and automation conditions.

- ``slaProperties: latency`` -> ``dg.FreshnessPolicy.time_window(fail_window=latency)`` (warning at
  80%): a product older than its latency shows as stale in the UI.
- ``slaProperties: frequency`` -> for a product fed only by its operational source,
  ``AutomationCondition.on_cron`` at that frequency; a product that consumes other products is
  ``eager``: it refreshes when an upstream product is published (across code locations).
- Each domain gets an automation-condition sensor. It is stopped by default, so a laptop running
  `dagster dev` does not start work on its own; ``MESH_AUTOMATION=on`` (production) starts it.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import dagster as dg

from mesh_platform.contracts.model import Contract


def freshness_policy(contract: Contract) -> dg.FreshnessPolicy | None:
    hours = contract.sla_hours("latency")
    if not hours:
        return None
    fail = timedelta(hours=hours)
    warn = max(timedelta(minutes=1), fail * 0.8)
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn if warn < fail else None)


def cron_for(hours: float) -> str:
    if hours <= 1:
        return "0 * * * *"
    if hours < 24:
        return f"0 */{int(round(hours))} * * *"
    if hours < 24 * 7:
        return "0 2 * * *" if hours < 48 else f"0 2 */{int(round(hours / 24))} * *"
    return "0 2 * * 1"


def automation_condition(contract: Contract | None, has_inputs: bool) -> dg.AutomationCondition | None:
    if has_inputs:
        return _eager()
    hours = contract.sla_hours("frequency") if contract is not None else None
    return _on_cron(cron_for(hours)) if hours else None


# Automation conditions are immutable: one instance per distinct condition serves every product
# (building ``eager()`` costs ~0.3 ms, which a mesh of thousands of products pays at every load).
@functools.cache
def _eager() -> dg.AutomationCondition:
    return dg.AutomationCondition.eager()


@functools.cache
def _on_cron(cron: str) -> dg.AutomationCondition:
    return dg.AutomationCondition.on_cron(cron)


def automation_sensor(domain: str, running: bool = False, run_tags: dict[str, str] | None = None) -> dg.AutomationConditionSensorDefinition:
    """The domain's automation sensor; ``running`` comes from the deployment's settings (``MESH_AUTOMATION``)."""
    return dg.AutomationConditionSensorDefinition(
        f"{domain}_automation",
        target=dg.AssetSelection.groups(domain),
        run_tags=run_tags or None,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description=f"Refreshes the {domain} domain's products from their SLAs and upstream updates.",
    )
