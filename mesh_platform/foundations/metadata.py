"""The ``mesh/*`` keys the platform writes into Dagster, in one place.

Each key has one meaning. They are grouped by where they appear: the definition of an asset (what the
UI shows on an asset's page), the metadata of an input (what a consumer asked for), and the records
of an event (materializations and observations: the audit log). Anything that reads Dagster's data
back (``mesh audit``, the catalog, tests) uses these names, never literals.
"""

from __future__ import annotations

# -- tags of an asset (filterable in the UI) ------------------------------------------------------
DOMAIN = "mesh/domain"
TYPE = "mesh/type"  # "product" or "intermediate"
STATUS = "mesh/status"
CLASSIFICATION = "mesh/classification"
ACCESS = "mesh/access"
POLICIES_TAG = "mesh/policies"  # "passed"
TEAM = "mesh/team"  # on the code location

# -- definition metadata of an asset ------------------------------------------------------------
CONTRACT_ID = "mesh/contract_id"
PORT_MAJOR = "mesh/port_major"
CONTRACT_VERSION = "mesh/contract_version"  # also recorded on each publish
CONTRACT_FILE = "mesh/contract_file"
CONTRACT_SOURCE = "mesh/contract_source"  # an input port loaded against its producer's last published contract: why
PORT_PATH = "mesh/port_path"
POLICIES = "mesh/policies"  # the policies a product passed at load
PRIVATE = "mesh/private"
PRIVATE_CONTRACT = "mesh/private_contract"  # the contract file of a private intermediate
QUOTAS = "mesh/quotas"  # the domain's quotas (on each product) and their use (on each publish)

# -- metadata of an input (what the consumer declared with its InputPort) -----------------------
CONSUMER_COLUMNS = "mesh/columns"  # the columns the consumer reads; None: all
CONSUMER = "mesh/consumer"
READ_FOR = "mesh/read_for"  # the consumer's asset and input that read ("claim_features.claims"; "dbt source claims.claims")
PURPOSE = "mesh/purpose"
AGGREGATE = "mesh/aggregate"
LOOKUP = "mesh/lookup"  # the key column an input port is read by (InputPort(lookup=...)); in a read's record: {"column", "keys"}

# -- records of events (the audit log) ----------------------------------------------------------
AUDIT = "mesh/audit"  # publish, read, denied, quarantine
PRODUCT = "mesh/product"
PORT = "mesh/port"
COLUMNS_READ = "mesh/columns_read"  # the columns a read returned, or a publish wrote
MASKED = "mesh/masked"
REMOVED = "mesh/removed"
ROWS = "mesh/rows"
REASON = "mesh/reason"
REASONS = "mesh/reasons"
VARIANTS = "mesh/variants"
BYTES = "mesh/bytes"
DELTA_VERSION = "mesh/delta_version"  # the Delta version a publish committed (full variant), or a read read
MASKED_VERSION = "mesh/masked_version"  # the version of the masked variant committed by the same publish
STORED_BYTES = "mesh/stored_bytes"  # bytes a port keeps in the lake, every kept version and the log included
TABLE_ROWS = "mesh/table_rows"  # rows of the whole port version a partition publish committed (dagster/row_count: the run's days)
PARTITIONING = "mesh/partitioning"  # definition: how a product is partitioned ("daily by reported_at, from 2026-05-01")
RETENTION = "mesh/retention"  # the retention a publish or maintenance run applies ({versions, days})
VACUUMED_FILES = "mesh/vacuumed_files"
EPSILON = "mesh/epsilon"
PRIVACY_BUDGET_REMAINING = "mesh/privacy_budget_remaining"
READ_BY = "mesh/read_by"  # on each publish: who read this port (this major) in the last 30 days, from the audit
READ_BY_MAJOR = "mesh/read_by_major"  # on the current product: who read each major still served, in the same window

DETAILS = "mesh/details"  # quarantine: a few rejected rows per reason

# -- labels for people, on a partition publish (the asset page; never read back by code) --------
# Dagster's `dagster/row_count` ("Row count" on the asset page) is the rows of one materialization:
# on a partitioned product, the rows of the run's days, not of the table. Next to it, the page says so.
TABLE_ROWS_LABEL = "Table rows (all days)"  # = mesh/table_rows
ROW_COUNT_COVERS = "Row count covers"  # which days `dagster/row_count` counts

# -- checks and quality results -------------------------------------------------------------------
RULE_KIND = "mesh/rule_kind"
CONTRACT_FIELD = "mesh/contract_field"  # the contract field a check comes from
QUALITY = "mesh/quality"  # check results carried in metadata (dbt products)
QUALITY_REPORT = "mesh/quality_report"
GX_SUCCESS_PERCENT = "mesh/gx_success_percent"
QUALITY_SECONDS = "mesh/quality_seconds"
QUALITY_CHECKS = "mesh/quality_checks"
QUALITY_WARNINGS = "mesh/quality_warnings"

# -- quarantine (on the output of a step) ---------------------------------------------------------
QUARANTINE = "mesh/quarantine"  # rows per reason
QUARANTINE_SCOPE = "mesh/quarantine_scope"
QUARANTINE_URI = "mesh/quarantine_uri"
QUARANTINED_ROWS = "mesh/quarantined_rows"

# -- run tags -------------------------------------------------------------------------------------
LAUNCHED_BY = "mesh/launched_by"
LANDED_FILES = "mesh/landed_files"
LANDED_SELECTION = "mesh/landed_selection"  # on the output: how many landed files a partitioned run read, of how many, for how many days
REPLAY_OF = "mesh/replay_of"  # replay: read every port at the version the named run read

LEGACY_COLUMNS_READ = "mesh/columns"
"""Audit records written before ``mesh/columns_read`` existed used the consumer key; still read back."""
