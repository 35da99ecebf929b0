"""Lineage out of Dagster: OpenLineage run events for every run, and the mesh as a graph.

- :mod:`mesh_platform.lineage.events` builds a run's OpenLineage events (START, then COMPLETE or
  FAIL) from the Dagster instance's event log, with ``openlineage-python``'s generated spec classes.
- :mod:`mesh_platform.lineage.emit` sends them through a configurable transport (a JSON-lines file
  under ``MESH_HOME`` by default; HTTP to a lineage server, or anything OpenLineage's own
  configuration names, in production).
- :mod:`mesh_platform.lineage.sensors` gives every domain the run-status sensors that emit the
  events of runs launched by Dagster (the UI, schedules, sensors, the daemon); ``mesh materialize``
  emits those of the runs it executes itself.
- :mod:`mesh_platform.lineage.graph` writes the mesh (domains, products, columns, consumers,
  grants) as a graph, in JSON and GraphML (``mesh lineage export``).

``openlineage-python`` is imported only where events are built or sent, never when a domain's
definitions load. See ``docs/lineage.md``.
"""
