"""Sources: the operational systems source-aligned domains read, and their landing zones.

``systems`` (the policy database and landing-zone resources), ``landed`` (a landed file, local or in
S3), ``s3`` (S3 landing zones, listed through dagster-aws), ``landing_sensor`` (a run per batch of
newly landed files) and ``simulation`` (the insurance demo's seeded systems).
"""
