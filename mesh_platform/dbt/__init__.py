"""dbt domains: a dbt project's models as data products under the same contracts and governance.

``contracts`` (dbt model contracts generated from ODCS), ``sql_lineage`` (column lineage and the
columns a model reads, from its SQL), ``plan`` (a dbt domain's plan), ``project`` (its prepared
project and manifest), ``specs`` (its assets and checks, read from the manifest) and ``assets``
(its multi-asset and run). dbt is imported only where it runs, never when a domain's definitions
load: not even through ``dagster_dbt``, which imports dbt-core and its adapters.
"""
