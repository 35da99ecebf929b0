"""Deployment: the mesh in production, and the same topology on one machine.

``iam`` (per-domain S3 policies from the grants), ``helm`` and ``run_pods`` (Helm values and each
domain's runs on Kubernetes), ``privacy_service`` (the only reader of aggregate-only products),
``s3_server`` (moto enforcing IAM, with an access log) and ``stack`` (``mesh stack``: Postgres, S3,
one code server per domain as its own identity, the daemon and the webserver). See
``docs/production.md``.
"""
