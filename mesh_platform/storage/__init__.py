"""Storage: the lake, ports as Delta tables, and the one write and read path of every port.

``lake`` (paths, atomic commits, local and S3 filesystems), ``delta`` (a port as a Delta table: one
commit per publish, reads at a version), ``gate`` (a check that runs while a publish writes its data
files; only the commit waits), ``publishing`` and ``io_manager`` (the write path and read path every
domain gets), ``versions`` (which version a read reads), ``retention`` (each domain's lake
maintenance).
"""
