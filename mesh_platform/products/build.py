"""Data products and private intermediates, built into Dagster assets from their plans.

A domain only declares *what* a product is (its contract file and its transform); the plan resolved
at load (:mod:`mesh_platform.products.plan`) says what it reads and must satisfy, the spec
(:mod:`mesh_platform.products.specs`) what the UI shows. This module turns a plan into one Dagster asset whose
step runs the transform, quarantines what it rejected, audits the result against the plan's contract
and policies, and hands the audited table, carrying its contract, to the IO manager.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import dagster as dg

from mesh_platform.quality import quarantine
from mesh_platform.governance import quotas
from mesh_platform.products.declarations import Declaration, NotYet
from mesh_platform.governance.audit import read_by
from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.storage.lake import Lake
from mesh_platform.products.ports import InputPort
from mesh_platform.products.private import Kept
from mesh_platform.quality.checks import audit, check_specs
from mesh_platform.foundations.settings import MeshSettings
from mesh_platform.products.specs import CLASSIFICATION_ORDER, column_schema, most_sensitive, product_description
from mesh_platform.products.specs import code_version as spec_code_version

if TYPE_CHECKING:
    from mesh_platform.products.plan import ProductPlan

MAX_KINDS = 3  # Dagster shows at most three kinds per asset


def _code_fingerprint(code) -> bytes:
    """What a function does, without where it sits in its file (moving it keeps its version)."""
    parts = [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode()]
    for const in code.co_consts:
        parts.append(_code_fingerprint(const) if hasattr(const, "co_code") else repr(const).encode())
    return b"\0".join(parts)


def code_version(decl: Declaration, contract) -> str:
    """Changes when the contract file or the transform's code changes."""
    code = getattr(decl.fn, "__code__", None)
    return spec_code_version(contract, _code_fingerprint(code) if code is not None else decl.fn.__qualname__.encode())


def _kinds(decl: Declaration) -> set[str]:
    kinds = ["pandas"] + [k for k in decl.kinds if k != "pandas"]
    kinds = kinds[: MAX_KINDS - 1] + ["deltalake"] if decl.is_product else kinds[:MAX_KINDS]  # ports are Delta tables
    return set(kinds)


def step_lake(context, settings: MeshSettings | None) -> Lake:
    """The lake a step writes its quarantine and quality reports to: its IO manager's, so that they
    always sit next to the ports it publishes (``Domain.definitions`` configures the IO manager with
    the deployment's lake; a run that swaps the IO manager's lake moves everything together).
    Without a mesh IO manager, the lake of ``settings`` (those its asset was built with)."""
    io_manager = getattr(context.resources, "io_manager", None)
    if isinstance(io_manager, MeshIOManager):
        return io_manager._lake()
    if settings is None:
        raise ValueError("this step has no mesh IO manager and was given no settings: no lake to write to")
    return Lake(settings.lake)


def step_home(context, settings: MeshSettings) -> str:
    """The mesh home a step's publishes use (the local masking key), beside :func:`step_lake`'s lake:
    its IO manager's configured home, else the home of the settings its asset was built with."""
    io_manager = getattr(context.resources, "io_manager", None)
    if isinstance(io_manager, MeshIOManager) and io_manager.home:
        return io_manager.home
    return settings.home


def _compute_fn(plan: "ProductPlan", settings: MeshSettings):
    """The step: run the transform, quarantine what it rejected, audit and hand the rest to the IO manager."""
    decl, contract = plan.declaration, plan.contract
    wants_context = decl.wants_context
    fn = decl.fn
    key = plan.key
    same_domain = [dg.AssetKey([plan.domain, s]) for s in decl.inputs.values() if isinstance(s, str)]

    def screen(context, data):
        """Unwrap :class:`Screened` results; store and audit their rejected rows (an event per step)."""
        if not isinstance(data, quarantine.Screened):
            return data, quarantine.Held(key, {}, None), False
        held = quarantine.store(step_lake(context, settings), key, context.run.run_id, data.rejections)
        return data.data, held, True

    if contract is None:
        private_contract = plan.private_contract

        def compute(context, **inputs):
            data = fn(context, **inputs) if wants_context else fn(**inputs)
            if isinstance(data, NotYet):  # nothing to store yet: the step succeeds, what reads it waits
                # a warning: nothing is stored, so what reads it is skipped (`mesh dev` prints warnings)
                context.log.warning(f"{key.to_user_string()}: not built yet: {data.reason}")
                return
            data, held, screened = screen(context, data)
            if held.total:
                yield quarantine.audit_event(held, key.to_user_string())
            kept = data if data is None or private_contract is None else Kept(data, private_contract)
            yield dg.Output(kept, metadata=quarantine.output_metadata(held, "intermediate") if screened else {})

    else:

        def compute(context, **inputs):
            data = fn(context, **inputs) if wants_context else fn(**inputs)
            data, held, _ = screen(context, data)
            if held.total:
                yield quarantine.audit_event(held, contract.id)
            upstream = quarantine.carried(context.instance, same_domain)
            verdict = quarantine.judge(f"{plan.domain}/{decl.name}", contract.quarantine_limits, quarantine.rows_of(data), held, upstream)
            yield verdict.result
            lake = step_lake(context, settings)
            # the primary key's rules run while the IO manager writes; its commit waits for them
            audited, metadata = yield from audit(context, contract, data, policies=plan.policies, lake=lake, reports=settings.quality_reports, defer_key=True)
            if verdict.failed:
                raise quarantine.QuarantineLimitExceeded(f"{plan.domain}/{decl.name}", verdict.message)
            if plan.quotas is not None:
                metadata.update((yield from quotas.judge(context, plan.quotas, key, audited.table, lake)))
            metadata.update(quarantine.output_metadata(quarantine.Held(key, verdict.counts, held.uri), "product"))
            if plan.column_lineage is not None:  # the UI's column lineage (docs/lineage.md)
                metadata["dagster/column_lineage"] = plan.column_lineage
            # who still reads this major and, on the current one, each major still served (docs/versions.md)
            metadata.update(read_by(context.instance, key, major=contract.major, previous=plan.previous_major_keys()))
            yield dg.Output(audited, metadata=metadata)
            if audited.deferred is not None:  # published: they passed (a failure fails the output)
                yield from audited.deferred.check_results()

    compute.__name__ = decl.name
    return compute


def build_asset(plan: "ProductPlan", settings: MeshSettings) -> dg.AssetsDefinition:
    """One Dagster asset for a product or a private intermediate, from its plan."""
    decl = plan.declaration
    ins: dict[str, dg.AssetIn] = {}
    for param, source in decl.inputs.items():
        if isinstance(source, InputPort):
            ins[param] = plan.ports[param].asset_in(plan.domain, read_for=f"{plan.name}.{param}")
        else:
            ins[param] = dg.AssetIn(key=dg.AssetKey([plan.domain, source]))
    spec = plan.spec
    with warnings.catch_warnings():
        # single-run backfills of a range of days are how partitioned products run
        # (mesh_platform.products.partitions); Dagster marks the parameter beta and would warn per asset
        warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
        return _asset(plan, settings, ins, spec)


def _asset(plan: "ProductPlan", settings: MeshSettings, ins: dict, spec) -> dg.AssetsDefinition:
    decl = plan.declaration
    return dg.asset(
        key=plan.key,
        ins=ins,
        group_name=plan.domain,
        owners=spec.owners or None,
        description=spec.description,
        kinds=_kinds(decl),
        tags=spec.tags,
        metadata=spec.metadata,
        code_version=code_version(decl, plan.contract),
        required_resource_keys=set(decl.required_resource_keys) or None,
        check_specs=[*check_specs(plan.key, plan.contract), *([quotas.check_spec(plan.key)] if plan.quotas is not None else [])] if plan.contract is not None else None,
        pool=plan.domain,  # the domain's concurrency pool (quota pool_slots)
        freshness_policy=spec.freshness_policy,
        automation_condition=spec.automation_condition,
        # a private intermediate may return NotYet (no output); a product always publishes
        output_required=plan.contract is not None,
        # daily partitions from the contract; a range of days is one run (mesh materialize --from/--to)
        partitions_def=layout.definition if (layout := plan.partitioning) is not None else None,
        backfill_policy=dg.BackfillPolicy.single_run() if layout is not None else None,
    )(_compute_fn(plan, settings))


__all__ = ["CLASSIFICATION_ORDER", "Declaration", "build_asset", "code_version", "column_schema", "most_sensitive", "product_description"]
