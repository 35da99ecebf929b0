"""Quality: write-audit-publish, quarantined source rows and the quality reports.

``checks`` (a product's data checked against its contract before it is published), ``rules`` (the
contract's quality rules), ``evaluate`` (all rules in one DuckDB pass), ``gx`` (Great Expectations
results and Data Docs, imported where they run), ``deferred`` (the primary key's rules, checked while
the publish writes), ``quarantine`` (rejected source rows) and ``reports`` (where the reports are
served from).
"""
