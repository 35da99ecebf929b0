"""Child-process entry point of :func:`benchmarks.harness.run_isolated`.

``python -m benchmarks.isolated SPEC.json`` calls, in order, every ``module:function`` of the spec
with its keyword arguments and writes the list of their JSON-serializable results where the spec
says.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    results = []
    for call in spec["calls"]:
        module_name, _, function_name = call["target"].partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        results.append(function(**call["kwargs"]))
    Path(spec["result"]).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
