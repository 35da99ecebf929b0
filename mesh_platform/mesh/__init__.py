"""The mesh as a whole: every domain loaded together, and what is done across them.

``workspace`` (the workspace file, each domain loaded alone, the mesh's asset graph), ``instance``
(the local Dagster instance), ``materialize`` and ``submission`` (``mesh materialize``: ordered runs,
in process or through the run queue), ``run_cleanup`` (dead runs release what they hold),
``catalog``, ``validation`` (``mesh validate``), ``consumers`` (who reads each product, column by
column), ``search``, ``usage`` and ``devserver`` (``mesh dev`` start-up progress).
"""
