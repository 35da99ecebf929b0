"""Products: a domain's data products, from declarations to Dagster definitions.

``descriptor`` (``domain.yaml``), ``declarations`` (what ``@domain.product`` records), ``ports``
(input ports resolved against the registry), ``partitions`` (daily partitions a contract declares),
``private`` (private intermediates), ``automation`` (SLA-driven freshness and automation),
``specs`` (what the UI shows of a product), ``plan`` (one plan per asset, problems collected),
``build`` (the asset and its step) and ``domain`` (``Domain``: a code location of products).
"""
