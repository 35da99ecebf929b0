"""Federated computational governance: policies as code, access, masking, privacy, quotas, audit.

One module per concern: ``identity`` (the domain a step runs as), ``grants`` (who may read what,
kept in the producing domain), ``access`` (the read-path decision), ``masking`` (pseudonymize or
remove sensitive columns), ``privacy`` (differentially private aggregate ports and their budget
ledger), ``policies`` (rules evaluated at load, in ``mesh validate`` and at run time), ``quotas``
(declared quotas within the mesh's ceilings) and ``audit`` (every publish and read as Dagster
events). Storage permissions generated from the grants are in :mod:`mesh_platform.deployment.iam`.
"""
