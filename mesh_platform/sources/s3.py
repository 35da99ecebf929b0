"""S3 through dagster-aws: listing and reading buckets the mesh does not write as a lake.

The landing zone (where the claims system drops files) and the buckets the production stack needs
are read with dagster-aws's :class:`~dagster_aws.s3.S3Resource`; credentials, region and endpoint
come from the standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_S3``) or the deployment's IAM role, as everywhere else.

Every failure is one :class:`S3Error` whose message names the bucket, the URI and what to fix:
missing credentials, a bucket that does not exist, access denied, an endpoint that does not answer.
"""

from __future__ import annotations

import io
from urllib.parse import urlparse


class S3Error(RuntimeError):
    """A bucket cannot be used; the message names it and what is wrong."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix empty or ending in ``/``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise S3Error(f"{uri!r} is not an s3://bucket/prefix URI")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def client():
    """A boto3 S3 client from dagster-aws's S3Resource (standard AWS environment)."""
    import os

    from dagster_aws.s3 import S3Resource

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return S3Resource(endpoint_url=endpoint, region_name=region, max_attempts=2).get_client()


def explain(exc: BaseException, uri: str, what: str) -> S3Error:
    """One clear message for whatever boto raised while using ``uri`` (``what``: its role in the mesh)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    bucket = urlparse(uri).netloc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3Error(
            f"{what} {uri}: no S3 credentials to read bucket '{bucket}': set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (from the deployment's secret) or give it an IAM role"
        )
    if isinstance(exc, EndpointConnectionError):
        return S3Error(f"{what} {uri}: the S3 endpoint does not answer ({exc}); check AWS_ENDPOINT_URL_S3")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404", "NotFound"):
            return S3Error(f"{what} {uri}: bucket '{bucket}' does not exist")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return S3Error(f"{what} {uri}: access to bucket '{bucket}' denied ({code}): check the deployment's credentials and IAM policy")
        return S3Error(f"{what} {uri}: bucket '{bucket}': {code or exc}")
    return S3Error(f"{what} {uri}: {type(exc).__name__}: {exc}")


def check_bucket(uri: str, what: str = "bucket") -> None:
    """Raise :class:`S3Error` unless the bucket of ``uri`` exists and these credentials can list it."""
    bucket, prefix = split_uri(uri)
    try:
        client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - translated into one message naming the bucket
        raise explain(exc, uri, what) from None


def list_objects(uri: str, what: str = "landing zone"):
    """Every object directly under ``uri`` as :class:`~mesh_platform.sources.landed.LandedFile`, sorted by name."""
    from mesh_platform.sources.landed import LandedFile

    bucket, prefix = split_uri(uri)
    s3 = client()
    found = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                name = key[len(prefix):]
                if not name:
                    continue
                modified = obj.get("LastModified")
                found.append(LandedFile(name, f"s3://{bucket}/{key}", obj.get("ETag", "").strip('"'),
                                        modified.timestamp() if modified is not None else 0.0,
                                        _open=lambda key=key: _read(s3, bucket, key, uri, what)))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, uri, what) from None
    return sorted(found, key=lambda f: f.name)


def _read(s3, bucket: str, key: str, uri: str, what: str) -> io.BytesIO:
    try:
        return io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"s3://{bucket}/{key}", what) from None


def put_file(uri: str, payload: bytes) -> None:
    """Write one object (used to drop files into a landing bucket)."""
    bucket, key = split_uri(uri)
    try:
        client().put_object(Bucket=bucket, Key=key.rstrip("/"), Body=payload)
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, uri, "object") from None
