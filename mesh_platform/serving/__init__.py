"""Output ports as endpoints: ``mesh serve``, governed SQL and Arrow access for consumers outside Dagster.

A claims handler's review tool, an analyst's notebook or a BI tool reads a product through the same
access decision as a Dagster read (:func:`mesh_platform.governance.access.authorize`): grants,
masking for uncleared consumers, aggregate-only products answered only with differentially private
releases (the same ledger), every request audited in the Dagster instance, limits from the
consumer's quotas. One service, two protocols:

- :mod:`.http`: ``GET /products/<domain>/<product>`` (Arrow IPC stream, Parquet, CSV or JSON lines,
  as ``Accept`` asks), ``POST /sql``, ``POST /aggregate``, ``GET /products``;
- :mod:`.flight`: Arrow Flight ``do_get`` of a product (columns, filter, version) or of a SQL query.

The caller is known only by a signed token (:mod:`.tokens`); :mod:`.reads` and :mod:`.sql` turn a
request into a stream of record batches (never the whole result in memory), :mod:`.limits` bounds
it, :mod:`.audit` records it, :mod:`.client` reads it back into pandas or Arrow. ``docs/serving.md``
"""
