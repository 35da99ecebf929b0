"""Quotas: what each domain may use of the shared platform, declared, bounded by the mesh, enforced.

A domain declares its quotas in ``domain.yaml``; the mesh sets defaults and ceilings in one file,
``quotas.yaml`` next to ``workspace.yaml`` (or ``MESH_QUOTAS``)::

    # domains/claims/domain.yaml
    quotas:
      concurrent_runs: 2
      max_run_seconds: 1800
      rows_per_publish: 5_000_000
      storage_bytes: 20GB
      privacy_epsilon: 5

A domain's quotas are the mesh defaults overridden by its own; a value above the mesh ceiling is a
problem of the domain's plan (a global policy: no domain grants itself more), as are unknown keys,
negative numbers and unreadable sizes, each naming ``domain.yaml`` and the field.

| quota | enforced by |
| --- | --- |
| ``concurrent_runs`` | Dagster: the run queue's tag limit on ``mesh/domain`` (instance configuration) |
| ``pool_slots`` | Dagster: every asset of the domain is in the concurrency pool ``<domain>`` |
| ``max_run_seconds`` | Dagster: the ``dagster/max_runtime`` tag on the domain's runs; run monitoring fails longer runs |
| ``rows_per_publish``, ``bytes_per_publish`` | the platform, in the product's step before publish |
| ``storage_bytes`` | the platform: the domain's lake prefix (ports with history, private, quarantine) plus the publish |
| ``cpu_request`` ... ``memory_limit`` | the production deployment's resources (Helm values) |
| ``serve_rows_per_response``, ``serve_bytes_per_response``, ``serve_concurrent_requests``, ``serve_query_seconds`` | ``mesh serve``: each response of the domain's consumers (and its people) stops at the limit with a clear error; requests beyond the concurrency are refused; a query running longer is cancelled |
| ``privacy_epsilon`` | the privacy ledger: the domain's total epsilon as a consumer of differentially private aggregate ports, over every product (each grant's own budget still holds); its ceiling also bounds any one grant's budget |

A refused publish fails the step: nothing is written, the last good version stays, downstream does
not run, and the refusal is audited (kind ``quota``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh_platform.foundations.problems import ContractError, Problem, display_path

FILE = "quotas.yaml"
INTEGERS = ("concurrent_runs", "pool_slots", "max_run_seconds", "rows_per_publish",
            "serve_rows_per_response", "serve_concurrent_requests", "serve_query_seconds")
SIZES = ("bytes_per_publish", "storage_bytes", "serve_bytes_per_response")
RESOURCES = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")  # Kubernetes quantities
NUMBERS = ("privacy_epsilon",)  # positive reals
KEYS = INTEGERS + SIZES + RESOURCES + NUMBERS
WARN_AT = 0.8

BUILT_IN_DEFAULTS: dict[str, Any] = {
    "concurrent_runs": 2,
    "pool_slots": 2,
    "max_run_seconds": 4 * 3600,
    "rows_per_publish": 50_000_000,
    "bytes_per_publish": 8 * 1024**3,
    "storage_bytes": 100 * 1024**3,
    "cpu_request": "500m",
    "cpu_limit": "2",
    "memory_request": "1Gi",
    "memory_limit": "4Gi",
    "privacy_epsilon": 10.0,
    "serve_rows_per_response": 10_000_000,
    "serve_bytes_per_response": 2 * 1024**3,
    "serve_concurrent_requests": 4,
    "serve_query_seconds": 60,
}

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_CPU = re.compile(r"^[0-9]+(\.[0-9]+)?m?$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")


class QuotaExceeded(Exception):
    """A publish that would go over a quota; nothing was published."""

    def __init__(self, domain: str, product: str, quota: str, limit: float, would_use: float):
        self.domain, self.product, self.quota, self.limit, self.would_use = domain, product, quota, limit, would_use
        super().__init__(
            f"{domain}/{product}: publish refused by the domain's quota {quota} = {_show(quota, limit)} "
            f"(this publish would use {_show(quota, would_use)}); nothing was published, the last good version stays. "
            f"Raise it in domains/{domain}/domain.yaml (quotas.{quota}) within the mesh ceiling, or publish less."
        )


#: the quotas ``mesh quotas`` has no current use for, and where each one is held instead
NOT_MEASURED = {
    "max_run_seconds": "per run: run monitoring fails a longer run",
    "cpu_request": "per run pod (Kubernetes)",
    "cpu_limit": "per run pod (Kubernetes)",
    "memory_request": "per run pod (Kubernetes)",
    "memory_limit": "per run pod (Kubernetes)",
    "pool_slots": "not measured: this instance keeps no pool slots",
}


def show(quota: str, value: Any) -> str:
    """A quota's limit or use as a person reads it: sizes in KiB..TiB, durations in seconds and
    hours, counts with separators; a quota left unset is ``no limit``."""
    if value is None:
        return "no limit"
    if isinstance(value, str):
        return value  # CPU and memory quantities, as Kubernetes writes them
    return _show(quota, value)


def _show(quota: str, value: float) -> str:
    if quota in SIZES:
        for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{int(value)} B"
    if quota in NUMBERS:
        return f"{value:g}"
    if quota == "max_run_seconds":
        for unit, size in (("h", 3600), ("min", 60)):
            if value >= size and value % size == 0:
                return f"{int(value):,} s ({int(value // size)} {unit})"
        return f"{int(value):,} s"
    return f"{int(value):,}"


def parse_size(value: Any) -> int:
    """``5GB``, ``512MiB``, ``1_000`` or an integer, in bytes; ValueError when it is not a size."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size (e.g. 500MB, 20GiB or a number of bytes)")
        number, unit = float(match.group(1).replace("_", "")), match.group(2).lower()
        if unit not in _UNITS:
            raise ValueError(f"{value!r}: unknown unit {match.group(2)!r} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite size")
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return int(number * _UNITS[unit])


def _parse(key: str, value: Any) -> Any:
    if key in INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, got {value!r}")
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    if key in SIZES:
        return parse_size(value)
    if key in NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"must be a finite number, got {value!r}")
        if value <= 0:
            raise ValueError(f"must be positive, got {value}")
        return float(value)
    text = str(value)
    if not (_CPU if key.startswith("cpu") else _MEMORY).match(text):
        raise ValueError(f"{value!r} is not a Kubernetes {'CPU' if key.startswith('cpu') else 'memory'} quantity (e.g. {'500m or 2' if key.startswith('cpu') else '512Mi or 4Gi'})")
    return text


def _quantity(key: str, text: str) -> float:
    if key.startswith("cpu"):
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    match = re.match(r"^([0-9.]+)(Ki|Mi|Gi|Ti|K|M|G|T)?$", text)
    scale = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
    return float(match.group(1)) * scale.get(match.group(2) or "", 1)


def _above(key: str, value: Any, ceiling: Any) -> bool:
    if key in RESOURCES:
        return _quantity(key, value) > _quantity(key, ceiling)
    return value > ceiling


@dataclass(frozen=True)
class MeshQuotas:
    """The mesh-level file: defaults every domain gets, ceilings no domain may exceed."""

    defaults: dict[str, Any]
    ceilings: dict[str, Any]
    source: str = "(built-in defaults)"


def mesh_quotas_path(domains_root: Path) -> Path:
    """``quotas.yaml`` beside the workspace, or ``MESH_QUOTAS`` as the process was started with it: a
    domain's module that points ``MESH_QUOTAS`` at a file of its own after start is ignored (the
    ceilings are the mesh's, not a domain's; :mod:`mesh_platform.foundations.launch_env`)."""
    from mesh_platform.foundations.launch_env import started_with

    configured = started_with("MESH_QUOTAS")
    return Path(configured) if configured else Path(domains_root).parent / FILE


def load_mesh_quotas(domains_root: Path) -> MeshQuotas:
    """The mesh's defaults and ceilings; a :class:`ContractError` naming the file and field when malformed."""
    from mesh_platform.contracts.loader import load_yaml

    path = mesh_quotas_path(domains_root)
    if not path.exists():
        return MeshQuotas(dict(BUILT_IN_DEFAULTS), {})
    shown = display_path(path)
    raw = load_yaml(path) or {}
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise ContractError([Problem(shown, "", "expected a mapping with `defaults` and `ceilings`")])
    for section in raw:
        if section not in ("defaults", "ceilings", "prices"):  # prices: mesh_platform.mesh.usage
            problems.append(Problem(shown, str(section), "unknown section (expected defaults, ceilings, prices)"))
    parsed: dict[str, dict[str, Any]] = {"defaults": dict(BUILT_IN_DEFAULTS), "ceilings": {}}
    for section in ("defaults", "ceilings"):
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            problems.append(Problem(shown, section, "expected a mapping of quota: value"))
            continue
        for key, value in values.items():
            if key not in KEYS:
                problems.append(Problem(shown, f"{section}.{key}", f"unknown quota (known: {', '.join(KEYS)})"))
                continue
            try:
                parsed[section][key] = _parse(key, value)
            except ValueError as exc:
                problems.append(Problem(shown, f"{section}.{key}", str(exc)))
    explicit = set((raw.get("defaults") or {}) if isinstance(raw.get("defaults"), dict) else ())
    for key, ceiling in parsed["ceilings"].items():
        if key in parsed["defaults"] and _above(key, parsed["defaults"][key], ceiling):
            if key in explicit:
                problems.append(Problem(shown, f"defaults.{key}", f"the default {parsed['defaults'][key]} is above the ceiling {ceiling}"))
            else:  # a built-in default the file did not set: the mesh's ceiling wins
                parsed["defaults"][key] = ceiling
    if problems:
        raise ContractError(problems)
    return MeshQuotas(parsed["defaults"], parsed["ceilings"], shown)


@dataclass(frozen=True)
class Quotas:
    """One domain's effective quotas (mesh defaults overridden by its ``domain.yaml``)."""

    domain: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def as_metadata(self) -> dict[str, Any]:
        return {k: self.values[k] for k in KEYS if k in self.values}


def resolve(domain: str, declared: dict[str, Any] | None, descriptor_file: str, mesh: MeshQuotas) -> tuple[Quotas, list[Problem]]:
    """A domain's quotas and the problems of its ``quotas:`` block (unknown key, bad value, above the ceiling)."""
    values = dict(mesh.defaults)
    problems: list[Problem] = []
    if declared is not None and not isinstance(declared, dict):
        return Quotas(domain, values), [Problem(descriptor_file, "quotas", "expected a mapping of quota: value")]
    for key, raw in (declared or {}).items():
        where = f"quotas.{key}"
        if key not in KEYS:
            problems.append(Problem(descriptor_file, where, f"unknown quota (known: {', '.join(KEYS)})"))
            continue
        try:
            value = _parse(key, raw)
        except ValueError as exc:
            problems.append(Problem(descriptor_file, where, str(exc)))
            continue
        ceiling = mesh.ceilings.get(key)
        if ceiling is not None and _above(key, value, ceiling):
            problems.append(Problem(descriptor_file, where, f"{raw} is above the mesh ceiling {ceiling} ({mesh.source}); a domain cannot grant itself more"))
            continue
        values[key] = value
    return Quotas(domain, values), problems


def storage_used(lake, domain: str) -> int:
    """Bytes under the domain's prefix of the lake: its ports with their kept history, private and quarantine."""
    return lake.size_under(domain)


def check_publish(quotas: Quotas, product: str, rows: int, nbytes: int, lake) -> dict[str, Any]:
    """Raise :class:`QuotaExceeded` when this publish goes over a quota; else the use it measured."""
    domain = quotas.domain
    limit = quotas.get("rows_per_publish")
    if limit is not None and rows > limit:
        raise QuotaExceeded(domain, product, "rows_per_publish", limit, rows)
    limit = quotas.get("bytes_per_publish")
    if limit is not None and nbytes > limit:
        raise QuotaExceeded(domain, product, "bytes_per_publish", limit, nbytes)
    used = storage_used(lake, domain)
    limit = quotas.get("storage_bytes")
    if limit is not None and used + nbytes > limit:
        raise QuotaExceeded(domain, product, "storage_bytes", limit, used + nbytes)
    return {"rows": rows, "bytes": nbytes, "storage_bytes": used}


def use_ratios(quotas: Quotas, use: dict[str, Any]) -> dict[str, float]:
    """Use as a fraction of each measured quota."""
    pairs = {"rows_per_publish": "rows", "bytes_per_publish": "bytes", "storage_bytes": "storage_bytes"}
    return {q: use[u] / quotas[q] for q, u in pairs.items() if quotas.get(q) and u in use}


CHECK = "quota"


def for_domain(domain: str, domain_root: Path) -> Quotas:
    """A domain's effective quotas read straight from the files (problems are reported by its plan)."""
    from mesh_platform.products.descriptor import load_descriptor

    try:
        mesh = load_mesh_quotas(Path(domain_root).parent)
    except ContractError:
        mesh = MeshQuotas(dict(BUILT_IN_DEFAULTS), {})
    try:
        declared = load_descriptor(Path(domain_root) / "domain.yaml").quotas
    except ContractError:
        declared = None
    return resolve(domain, declared, "domain.yaml", mesh)[0]


def run_tags(domain: str, domain_root: Path) -> dict[str, str]:
    """Tags for every run of ``domain``: its name (run-queue limit) and its maximum run time."""
    from mesh_platform.foundations import metadata as md

    tags = {md.DOMAIN: domain}
    seconds = for_domain(domain, domain_root).get("max_run_seconds")
    if seconds:
        tags["dagster/max_runtime"] = str(seconds)
    return tags


def domain_limits(domains_root: Path, names: list[str]) -> dict[str, Quotas]:
    """Every listed domain's quotas (for the instance configuration and ``mesh quotas``)."""
    return {name: for_domain(name, Path(domains_root) / name) for name in names}


def check_spec(key):
    """The per-product quota check: warns at 80% of a publish or storage quota; a refusal fails it."""
    import dagster as dg

    return dg.AssetCheckSpec(CHECK, asset=key, blocking=True, description=f"The domain's quotas hold for this publish (warning at {WARN_AT:.0%} of rows, bytes or storage).")


def judge(context, quotas: Quotas, key, table, lake):
    """In the product's step, before publish: yield the quota check; raise :class:`QuotaExceeded` (audited) when over.

    Returns the metadata of the use (limits, use, percentages) for the materialization.
    """
    import dagster as dg

    from mesh_platform.foundations import metadata as md
    from mesh_platform.governance.audit import log_observation, quota_metadata

    product = key.path[-1]
    try:
        use = check_publish(quotas, product, table.num_rows, table.nbytes, lake)
    except QuotaExceeded as exc:
        if context is not None:
            log_observation(context.get_step_execution_context(), key, quota_metadata(quotas.domain, key.to_user_string(), exc.quota, exc.limit, exc.would_use, str(exc)))
        yield dg.AssetCheckResult(check_name=CHECK, asset_key=key, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={"quota": exc.quota, "limit": exc.limit, "would_use": exc.would_use}, description=str(exc))
        raise
    ratios = use_ratios(quotas, {**use, "storage_bytes": use["storage_bytes"] + use["bytes"]})
    near = {q: r for q, r in ratios.items() if r >= WARN_AT}
    yield dg.AssetCheckResult(
        check_name=CHECK, asset_key=key, passed=not near, severity=dg.AssetCheckSeverity.WARN,
        metadata={f"{q}_percent": round(100 * r, 2) for q, r in ratios.items()},
        description=("near quota: " + ", ".join(f"{q} at {r:.0%}" for q, r in near.items())) if near else None,
    )
    return {md.QUOTAS: dg.MetadataValue.json({"limits": quotas.as_metadata(), "use": use, "percent": {q: round(100 * r, 2) for q, r in ratios.items()}})}


def _run_use(instance, domain: str) -> dict[str, int]:
    """Runs of the domain in progress now (queued ones wait for this limit) and its pool's claimed slots."""
    import dagster as dg

    from mesh_platform.foundations import metadata as md

    running = instance.get_runs_count(filters=dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING], tags={md.DOMAIN: domain}))
    use = {"concurrent_runs": running}
    storage = instance.event_log_storage
    if getattr(storage, "supports_global_concurrency_limits", False):
        use["pool_slots"] = len(storage.get_concurrency_info(domain).claimed_slots)
    return use


def report(mesh, lake, instance, ledger: str | None = None) -> list[dict[str, Any]]:
    """``mesh quotas``: per domain, each quota with its use and percentage; per product, its last publish.
    ``ledger``: the mesh's privacy ledger (the epsilon spent; :class:`PrivacyLedger` says the default)."""
    import dagster as dg

    from mesh_platform.foundations import metadata as md

    from mesh_platform.governance.privacy import PrivacyLedger

    ledger = PrivacyLedger(ledger)
    out = []
    for loaded in mesh.domains:
        if not loaded.ok or loaded.domain.last_plan is None or loaded.domain.last_plan.quotas is None:
            continue
        domain = loaded.domain
        quotas = domain.last_plan.quotas
        products = []
        largest_rows = largest_bytes = 0
        for name in domain.product_names:
            key = dg.AssetKey([domain.name, name])
            event = instance.get_latest_materialization_event(key)
            meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
            rows = meta["dagster/row_count"].value if "dagster/row_count" in meta else None
            nbytes = meta[md.BYTES].value if md.BYTES in meta else None
            largest_rows, largest_bytes = max(largest_rows, rows or 0), max(largest_bytes, nbytes or 0)
            products.append({"product": name, "rows": rows, "bytes": nbytes, "stored_bytes": lake.size_under(f"{domain.name}/{name}")})
        use = {"rows_per_publish": largest_rows, "bytes_per_publish": largest_bytes, "storage_bytes": storage_used(lake, domain.name),
               "privacy_epsilon": ledger.spent_by(domain.name), **_run_use(instance, domain.name)}
        listed = []
        for key in KEYS:
            limit = quotas.get(key)
            used = use.get(key)
            percent = round(100 * used / limit, 1) if used is not None and isinstance(limit, (int, float)) and limit else None
            listed.append({"quota": key, "limit": limit, "use": used, "percent": percent})
        out.append({"domain": domain.name, "quotas": listed, "products": products})
    return out


__all__ = ["CHECK", "NOT_MEASURED", "report", "KEYS", "check_spec", "judge", "MeshQuotas", "QuotaExceeded", "Quotas", "check_publish", "load_mesh_quotas", "parse_size", "resolve", "storage_used", "use_ratios"]
