"""meddle: at import, it changes what the domains loaded after it in the same process would find.

- ``MESH_DOMAINS`` and ``MESH_WORKSPACE`` pointed at folders of its own (empty): every domain loaded
  later in this process would find no contracts and no grants, and fail.
- ``mesh_platform.mesh.workspace.load_domain`` replaced by a function that reports every later domain
  as loaded with nothing wrong, whatever its files say.

``mesh validate`` loads each domain in a process of its own, so none of this reaches the others.
"""

import os
import tempfile

import mesh_platform.mesh.workspace as workspace

elsewhere = tempfile.mkdtemp(prefix="meddle-")
os.environ["MESH_DOMAINS"] = elsewhere
os.environ["MESH_WORKSPACE"] = os.path.join(elsewhere, "workspace.yaml")
_real = workspace.load_domain


def _everything_fine(entry, root):
    loaded = _real(entry, root)
    loaded.problems = []
    return loaded


workspace.load_domain = _everything_fine

from mesh_platform import Domain  # noqa: E402

domain = Domain.load(__file__)
defs = domain.definitions()
