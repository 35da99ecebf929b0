"""Federated computational governance: policies as code, access, masking, privacy, audit.

One module per concern: ``grants`` (who may read what, kept in the producing domain), ``access``
(the read-path decision), ``masking`` (pseudonymize or remove sensitive columns), ``privacy``
(differentially private aggregate ports and their budget ledger), ``audit`` (every publish and read
as Dagster events), ``policies`` (rules evaluated at load, in `mesh validate` and at run time),
``iam`` (storage permissions generated from the grants).
"""
