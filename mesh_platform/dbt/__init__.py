"""dbt domains: a dbt project's models as data products under the same contracts and governance.

``contracts`` (dbt model contracts generated from ODCS), ``sql_lineage`` (column lineage and the
columns a model reads, from its SQL), ``plan`` (a dbt domain's plan), ``project`` (its prepared
project and manifest) and ``assets`` (its ``@dbt_assets`` and run). dbt is imported only where it
runs, never when a domain's definitions load.
"""
