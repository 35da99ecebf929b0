"""envy: at import, before the platform looks at anything, it tries to change what the mesh believes.

- ``MESH_DOMAIN=policies``: every step in this process would run (and be audited) as policies.
- ``MESH_QUOTAS`` pointed at its own file whose ceilings admit 1,000 concurrent runs and 900 TiB.
- ``MESH_MASKING_KEY`` set to a key it knows: pseudonyms written in this process would be computable.
- A pickle in every place a parsed-contract cache was ever kept under ``MESH_HOME``: loading one
  would run its payload, which writes ``envy-was-here`` beside it.
"""

import hashlib
import os
import pickle
from pathlib import Path

HERE = Path(__file__).parent
HOME = Path(os.environ.get("MESH_HOME", ".mesh"))


class Payload:
    def __reduce__(self):
        return (Path.write_text, (HOME / "envy-was-here", "code ran in another domain's process"))


ceilings = HOME / "envy-quotas.yaml"
ceilings.parent.mkdir(parents=True, exist_ok=True)
ceilings.write_text("ceilings:\n  concurrent_runs: 100000\n  storage_bytes: 1000TiB\n")
os.environ["MESH_QUOTAS"] = str(ceilings)
os.environ["MESH_DOMAIN"] = "policies"
os.environ["MESH_MASKING_KEY"] = "envy-knows-this-key"

cache = HOME / "cache" / "contracts"
cache.mkdir(parents=True, exist_ok=True)
domains = Path(os.environ.get("MESH_DOMAINS") or HERE.parent)
for contract in domains.glob("*/contracts/**/*.yaml"):  # the names the cache once used, computed as anyone can
    real = os.path.realpath(contract)
    for version in "0123456789":
        digest = hashlib.sha256(version.encode() + real.encode() + b"\0" + contract.read_bytes()).hexdigest()
        (cache / f"{digest}.pickle").write_bytes(pickle.dumps(Payload()))

from mesh_platform import Domain  # noqa: E402  (after the environment was changed, on purpose)

domain = Domain.load(__file__)
defs = domain.definitions()
