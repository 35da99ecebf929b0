"""Storage agrees with policy: per-domain S3 IAM policy documents generated from the grants.

Each domain's role may write its own prefix (``<lake>/<domain>/*``: ports, masked variants, its quarantine,
private intermediates, quality reports) and read exactly the port tables its input ports use,
in the variant the access decision gives it: the ``full`` table when it is cleared for every
sensitive column it reads, the ``masked`` one otherwise. A port is a Delta table, a folder of data
files and its ``_delta_log/``: the grant is the table's prefix ``.../v<major>/*`` (or
``.../v<major>_masked/*``, a sibling, so a grant on one never covers the other), for GetObject and
for listing (delta-rs lists the log). Aggregate-only grants give the consumer
no storage access at all: the platform's privacy role (``mesh-privacy.json``) reads those products
and releases only noisy aggregates. The serving role (``mesh-serve.json``, ``mesh serve``) reads every
output port, full and masked, and nothing else: it serves each caller what its grant allows, so
its storage access is the union of what it may serve, read only. The reports role
(``mesh-reports.json``, ``mesh reports serve``) reads the quality reports (``<domain>/<product>/_quality/*``)
and nothing else. Generated with ``mesh iam``; ``infra/iam/`` holds the output
for the demo lake, and a test keeps it in sync with the grants.

S3 grants whole objects, not columns. A port that reads only some columns of a product may be
cleared for those but not for another sensitive column of the same object; the full object would
then hand the consumer's credentials a column the platform withholds. The generator refuses that
case (:class:`StorageGrantError`) instead of writing a policy wider than the grant.

``tests/test_storage_grants_s3.py`` attaches these documents to one IAM identity per domain on an
S3 server that enforces IAM (moto, loopback) and checks every identity against every object.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

from mesh_platform.governance.access import AccessPending, authorize
from mesh_platform.governance.grants import grants_path
from mesh_platform.governance.masking import sensitive_columns
from mesh_platform.quality.reports import QUALITY_FOLDER
from mesh_platform.storage.lake import Lake
from mesh_platform.products.ports import resolve
from mesh_platform.mesh.workspace import Mesh

VERSION = "2012-10-17"


def _arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else "")


class StorageGrantError(ValueError):
    """The grants give a consumer something per column that storage can only give per object."""


def _list_statement(sid: str, bucket: str, prefixes: set[str]) -> dict:
    """ListBucket on the bucket, only under the given prefixes (``s3:prefix`` condition)."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": [_arn(bucket)],
        "Condition": {"StringLike": {"s3:prefix": sorted(prefixes)}},
    }


def _read_only(what: str, bucket: str, prefixes: set[str]) -> dict:
    """A platform role that reads (and lists) the objects under ``prefixes`` and nothing else."""
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": f"Read{what}", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": sorted(_arn(bucket, f"{r}/*") for r in prefixes)},
            _list_statement(f"List{what}", bucket, {f"{r}/*" for r in prefixes}),
        ],
    }


def _storage_variant(domain: str, contract, columns: list[str] | None) -> str:
    """The object a consumer's credentials may read: the read's variant, checked per object."""
    decision = authorize(domain, contract, columns)
    if decision.variant == "masked":
        return "masked"
    whole = authorize(domain, contract)
    if whole.variant != "full":
        withheld = sorted(set(whole.masked) | set(whole.removed))
        classes = sorted({sensitive_columns(contract)[c] for c in withheld})
        raise StorageGrantError(
            f"domain {domain!r} reads {contract.id} unmasked ({', '.join(columns or [])}), but its full object also "
            f"holds {', '.join(withheld)} ({', '.join(classes)}) that {domain!r} is not cleared for; S3 grants whole "
            f"objects, so a policy for the full variant would expose those columns. Unmask {', '.join(classes)} for "
            f"{domain!r} in {grants_path(contract.domain)} (and give it the clearance in its domain.yaml), or publish "
            f"{', '.join(withheld)} in another product"
        )
    return "full"


def _split(lake_uri: str) -> tuple[str, str]:
    parsed = urlparse(lake_uri)
    if parsed.scheme != "s3":
        raise ValueError(f"IAM policies need an s3:// lake URI, got {lake_uri!r}")
    return parsed.netloc, parsed.path.strip("/")


def policies_for(mesh: Mesh, lake_uri: str) -> dict[str, dict]:
    """{file stem: IAM policy document} for every loaded domain, plus the privacy, serving and reports roles."""
    from mesh_platform.contracts.registry import mesh_registry

    bucket, prefix = _split(lake_uri)
    key = (lambda rel: f"{prefix}/{rel}" if prefix else rel)
    registry = mesh_registry()
    documents: dict[str, dict] = {}
    privacy_reads: set[str] = set()
    for loaded in mesh.domains:
        if not loaded.ok:
            continue
        domain = loaded.domain.name
        reads: set[str] = set()
        for source in {p for ports in loaded.domain.input_ports.values() for p in ports}:
            port = resolve(source, registry, domain)
            c = port.contract
            if source.aggregate is not None:
                privacy_reads.add(key(Lake.port_path(c.domain, c.name, c.major)))
                continue
            try:
                variant = _storage_variant(domain, c, port.columns)
            except AccessPending:  # a grant request: storage gives nothing until the producer approves it
                continue
            reads.add(key(Lake.port_path(c.domain, c.name, c.major, variant=variant)))
        statements = [
            {
                "Sid": "OwnDomainReadWrite",
                "Effect": "Allow",
                # AbortMultipartUpload: a large write that fails is cleaned up, not left half-uploaded
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                "Resource": [_arn(bucket, key(f"{domain}/*"))],
            },
            _list_statement("ListOwnAndGrantedPrefixes", bucket, {key(f"{domain}/*")} | {f"{r}/*" for r in reads}),
        ]
        if reads:
            statements.append(
                {"Sid": "ReadGrantedPorts", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": sorted(_arn(bucket, f"{r}/*") for r in reads)}
            )
        documents[domain] = {"Version": VERSION, "Statement": statements}
    if privacy_reads:
        documents["mesh-privacy"] = _read_only("AggregateOnlyProducts", bucket, privacy_reads)
    served: set[str] = set()
    full = registry.full
    for contract in [*full.contracts, *full.previous]:
        if contract.retired():
            continue
        served.add(key(Lake.port_path(contract.domain, contract.name, contract.major)))
        if sensitive_columns(contract):
            served.add(key(Lake.port_path(contract.domain, contract.name, contract.major, variant="masked")))
    if served:
        # `mesh serve` (docs/serving.md): reads every output port, full and masked, to serve each
        # caller what its grant allows; never a private area, quarantine, the landing zone, or a write
        documents["mesh-serve"] = _read_only("OutputPorts", bucket, served)
    reports = {key(f"{c.domain}/{c.name}/{QUALITY_FOLDER}") for c in full.contracts}
    if reports:
        # `mesh reports serve` (docs/quality.md): renders the quality reports runs leave in the lake,
        # so runs never import Great Expectations; it reads reports only, never a port, and writes nothing
        documents["mesh-reports"] = _read_only("QualityReports", bucket, reports)
    return documents


def write_policies(mesh: Mesh, lake_uri: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in sorted(policies_for(mesh, lake_uri).items()):
        path = out / f"{name}.json"
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    return written
