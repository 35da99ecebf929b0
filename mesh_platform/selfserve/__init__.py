"""Self-serve: a new domain, or a new product of a domain, in one command.

``new_domain`` and ``new_product`` check everything before anything is written (``changes``), from
the files in ``templates``; ``iam`` regenerates the committed IAM documents they affect. Grant
requests are written pending; ``mesh grants approve`` (:mod:`mesh_platform.governance.grants`)
approves them.
"""
