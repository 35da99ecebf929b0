"""The S3-speaking test server is the stack's own (:mod:`mesh_platform.deployment.s3_server`): moto's server
mode on loopback, optionally enforcing IAM. Tests import it from here."""

from mesh_platform.deployment.s3_server import REGION, Credentials, S3Server  # noqa: F401
