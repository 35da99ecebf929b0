"""Sensors that drive the mesh from the outside world.

:func:`landing_zone_sensor` watches a landing folder and requests one run of a domain's job for
each new set of files. It waits (with a visible skip reason) until the products the job reads from
other domains have been published at least once, so that a fresh mesh does not start with a run
that is bound to fail, and it only advances its cursor when it asks for a run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import dagster as dg

from mesh_platform import metadata as md

from mesh_platform.sources import LandingZone


def landing_zone_sensor(
    *,
    name: str,
    job,
    landing: LandingZone,
    patterns: Sequence[str],
    waits_for: Sequence[Sequence[str]] = (),
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    upstream = [dg.AssetKey(list(k)) for k in waits_for]

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=f"Starts {job.name} when new files matching {', '.join(patterns)} land in the landing zone.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        seen = set(json.loads(context.cursor)) if context.cursor else set()
        files = sorted({str(p.name) for pattern in patterns for p in landing.files(pattern)})
        new = [f for f in files if f not in seen]
        if not new:
            return dg.SkipReason(f"no new files in {landing.path}")
        missing = [k.to_user_string() for k in upstream if context.instance.get_latest_materialization_event(k) is None]
        if missing:
            return dg.SkipReason(f"{len(new)} new file(s) waiting for upstream products to be published: {', '.join(missing)}")
        run_key = hashlib.sha256("\n".join(new).encode()).hexdigest()[:16]
        context.update_cursor(json.dumps(files))
        return dg.RunRequest(run_key=run_key, tags={md.LANDED_FILES: str(len(new))})

    return _sensor
