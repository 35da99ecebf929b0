"""Sensors that drive the mesh from the outside world.

:func:`landing_zone_sensor` watches a landing zone (a local folder, or an S3 prefix listed through
dagster-aws) and requests one run of a domain's job for the files it has not seen yet. It waits
(with a visible skip reason) until the products the job reads from other domains have been
published at least once, so that a fresh mesh does not start with a run that is bound to fail.

A file counts as seen when the sensor already asked for a run on it (its cursor), or when the
assets that read the landing zone recorded it in their last materialization (see
:func:`record_landed`): a run started another way (``mesh materialize``, the UI, a schedule)
already read those files, and running the domain again on them would only make it newer than what
its consumers were built from. While such a run is still going (one it started itself too: a run
reads every file with rows on its days when it runs, so a file that landed meanwhile may be read by
it), the sensor waits for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Sequence

import dagster as dg

from mesh_platform.foundations import metadata as md
from mesh_platform.foundations.settings import daemon_interval
from mesh_platform.sources.landed import LandedFile
from mesh_platform.sources.systems import LandingZone

LANDED_FILES = md.LANDED_FILES  # materialization metadata: the landed files a run read
_MAX_CURSOR_FILES = 100_000
SETTLE_SECONDS = 5.0
"""A batch is run once its files have been quiet this long (``MESH_LANDING_SETTLE_SECONDS``): an upstream
system drops a batch as several files (claims, then their events), and a tick between two of them
would run the first alone, then the second in a run of its own over the same days."""


def batch_id(name: str, patterns: Sequence[str]) -> tuple[int, str] | None:
    """Which pattern ``name`` matches (its index) and the part of the name its ``*`` stands for:
    ``claims_batch_0101.csv`` under ``claims_*.csv`` is ``(0, "batch_0101")``."""
    import fnmatch

    for i, pattern in enumerate(patterns):
        if fnmatch.fnmatchcase(name, pattern):
            head, _, tail = pattern.partition("*")
            return i, name[len(head): len(name) - len(tail)]
    return None


def complete(new: Sequence[str], listed: Sequence[str], patterns: Sequence[str]) -> bool:
    """Every batch among the ``new`` files has a file for every pattern in ``listed`` (see
    ``complete_batches`` of :func:`landing_zone_sensor`)."""
    parts: dict[str, set[int]] = {}
    for name in listed:
        found = batch_id(name, patterns)
        if found is not None:
            parts.setdefault(found[1], set()).add(found[0])
    wanted = {found[1] for found in (batch_id(n, patterns) for n in new) if found is not None}
    return bool(wanted) and all(len(parts.get(b, ())) == len(patterns) for b in wanted)


RUN_GAP_DAYS = 7
"""Touched days at most this far apart go into one run: the days in between are published again from
the files they already had (the same rows), which costs less than a run more."""


def record_landed(context, files: Sequence[LandedFile]) -> None:
    """Record on the asset being materialized which landed files it read (the sensor skips them)."""
    context.add_output_metadata({LANDED_FILES: dg.MetadataValue.json(sorted(f.name for f in files))})


def files_read(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]) -> set[str]:
    """The landed files the last materialization of each of ``keys`` recorded (see :func:`record_landed`)."""
    names: set[str] = set()
    for key in keys:
        event = instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event is not None else None
        value = materialization.metadata.get(LANDED_FILES) if materialization is not None else None
        if value is not None and isinstance(value.value, list):
            names.update(str(n) for n in value.value)
    return names


def _reading_runs(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], job_name: str) -> list[str]:
    """Ids of runs not finished yet (queued ones included: a queued run reads every file with rows on
    its days when it starts, so files landed meanwhile are read by it) that materialize any of
    ``keys``: runs of ``job_name`` (the sensor's own job; runs from before its requests named their
    assets have no asset selection) or of a selection with one of them (this sensor, ``mesh
    materialize``, the UI, a schedule, automation)."""
    from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

    wanted = set(keys)
    return [
        run.run_id
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=NOT_FINISHED_STATUSES), limit=200)
        if (run.asset_selection and wanted & set(run.asset_selection)) or (not run.asset_selection and run.job_name == job_name)
    ]


def landing_zone_sensor(
    *,
    name: str,
    job,
    landing: LandingZone,
    patterns: Sequence[str],
    waits_for: Sequence[Sequence[str]] = (),
    readers: Sequence[Sequence[str]] = (),
    minimum_interval_seconds: int | None = None,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    days: dict[str, str] | None = None,
    settle_seconds: float | None = None,
    complete_batches: bool = False,
) -> dg.SensorDefinition:
    """``complete_batches``: the upstream system drops a batch as one file per pattern, named alike
    (``claims_batch_0101.csv`` and ``claim_events_batch_0101.jsonl``: what each pattern's single
    ``*`` stands for names the batch). New files whose batches are complete (a file for every
    pattern) run at once; the settle time (``MESH_LANDING_SETTLE_SECONDS``) is waited only for a
    batch still missing a file, which then runs on what it has. Only for an S3 landing zone, where
    an object is listed once its upload is complete; a local folder lists a file while it is still
    being written, so there the settle time always applies.

    ``readers``: the assets that read the landing zone and :func:`record_landed` what they read.

    ``days`` (for a daily-partitioned job): per pattern, the column that gives a row's day. The
    sensor then reads that column of each new file and requests only the days the new files touch:
    one run per range of days (ranges less than :data:`RUN_GAP_DAYS` apart joined), never the whole history.
    Days the job's partitions do not have (before their start, or in the future) are left out and
    logged."""
    upstream = [dg.AssetKey(list(k)) for k in waits_for]
    reader_keys = [dg.AssetKey(list(k)) for k in readers]
    interval = minimum_interval_seconds or daemon_interval(int(os.environ.get("MESH_SENSOR_INTERVAL", "30")))
    settle = settle_seconds if settle_seconds is not None else float(os.environ.get("MESH_LANDING_SETTLE_SECONDS", SETTLE_SECONDS))
    if complete_batches and any(p.count("*") != 1 for p in patterns):
        raise ValueError(f"{name}: complete_batches needs exactly one '*' in each pattern (it names the batch), got {list(patterns)}")

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval,
        default_status=default_status,
        description=f"Starts {job.name} when new files matching {', '.join(patterns)} land in the landing zone ({landing.path}).",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        seen = set(json.loads(context.cursor)) if context.cursor else set()
        files = landing.landed_matching(patterns)  # one listing: files landed together are seen together
        listed = [f.name for f in files]
        new = [f for f in listed if f not in seen]
        youngest = max((f.modified for f in files if f.name not in seen), default=0.0)
        whole = complete_batches and landing.is_s3 and complete(new, listed, patterns)
        if new and settle > 0 and not whole and time.time() - youngest < settle:
            return dg.SkipReason(f"{len(new)} new file(s) still landing: the newest {max(0.0, time.time() - youngest):.1f} s ago; "
                                 f"a batch runs once quiet for {settle:g} s")
        if new and reader_keys:
            running = _reading_runs(context.instance, reader_keys, job.name)
            if running:
                return dg.SkipReason(f"{len(new)} new file(s) waiting for run(s) already reading the landing zone: {', '.join(r[:8] for r in running)}")
            read = files_read(context.instance, reader_keys)
            if read & set(new):
                # read by a run this sensor did not start: remember them, never run on them again
                seen |= read & set(listed)
                new = [f for f in new if f not in seen]
                context.update_cursor(json.dumps(sorted(seen & set(listed))[-_MAX_CURSOR_FILES:]))
        if not new:
            return dg.SkipReason(f"no new files in {landing.path}")
        missing = [k.to_user_string() for k in upstream if context.instance.get_latest_materialization_event(k) is None]
        if missing:
            return dg.SkipReason(f"{len(new)} new file(s) waiting for upstream products to be published: {', '.join(missing)}")
        run_key = hashlib.sha256("\n".join(new).encode()).hexdigest()[:16]
        tags = {md.LANDED_FILES: str(len(new)), "mesh/landed_keys_sha": run_key}
        selection = _job_assets(context, job)
        if days:
            requests = _partition_requests(context, job, files, new, days, run_key, tags, selection)
            context.update_cursor(json.dumps(sorted((seen | set(new)) & set(listed))[-_MAX_CURSOR_FILES:]))
            return requests or dg.SkipReason(f"{len(new)} new file(s) have no rows on a day of {job.name}'s partitions")
        context.update_cursor(json.dumps(sorted((seen | set(new)) & set(listed))[-_MAX_CURSOR_FILES:]))
        return dg.RunRequest(run_key=run_key, tags=tags, asset_selection=selection)

    return _sensor


def _job_assets(context, job) -> list[dg.AssetKey] | None:
    """The job's assets, named in each run request so the run carries them as its asset selection.

    A run of a job without one has no ``asset_selection``, and Dagster's automation then cannot tell
    that the run builds those assets: ``any_deps_updated`` ignores an input updated by a run that
    also builds the asset only when the asset is in that run's selection
    (``executed_with_root_target``). Without it, the landed files this run publishes first made
    claims' automation start a second run over the same day while this one was still building it."""
    if context.repository_def is None or not context.repository_def.has_job(job.name):
        return None
    return sorted(context.repository_def.get_job(job.name).asset_layer.selected_asset_keys, key=lambda k: k.to_user_string())


def _partition_requests(context, job, files: Sequence[LandedFile], new: list[str], days: dict[str, str], run_key: str, tags: dict[str, str],
                        selection: list[dg.AssetKey] | None) -> list[dg.RunRequest]:
    """One run request per range of consecutive days that the ``new`` files have rows on."""
    import fnmatch

    from mesh_platform.products.partitions import ranges
    from mesh_platform.sources.systems import days_in_file

    touched: set[str] = set()
    for pattern, column in days.items():
        for f in files:
            if f.name in new and fnmatch.fnmatchcase(f.name, pattern):
                touched |= days_in_file(f, column)
    definition = getattr(job, "partitions_def", None)
    if definition is None and context.repository_def is not None:  # an asset job's partitions come from its assets
        definition = context.repository_def.get_job(job.name).partitions_def
    known = set(definition.get_partition_keys()) if definition is not None else touched
    outside = sorted(touched - known)
    if outside:
        context.log.warning(f"rows on {len(outside)} day(s) outside the partitions of {job.name} ({', '.join(outside[:5])}): not requested")
    requests = []
    for first, last in ranges(touched & known, gap=RUN_GAP_DAYS):
        range_tags = {**tags, "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        requests.append(dg.RunRequest(run_key=f"{run_key}-{first}-{last}", tags=range_tags, asset_selection=selection))
    return requests
