"""``mesh stack``: the production topology on one machine.

What the Helm chart deploys (see ``infra/``), started as local processes on loopback:

| production                                   | here                                                        |
| -------------------------------------------- | ----------------------------------------------------------- |
| managed Postgres (``DAGSTER_POSTGRES_URL``)  | Debian's PostgreSQL, a cluster in ``$MESH_HOME/stack/postgres`` (:mod:`.postgres`) |
| S3: lake, landing bucket, compute logs       | moto's S3 server enforcing IAM, with an access log (objects kept in memory) |
| one IAM role per domain (``infra/iam``)      | one IAM user per domain holding that policy; its own OS user when started as root (:mod:`.identities`) |
| the privacy release service                  | ``python -m mesh_platform.deployment.privacy_service`` as ``mesh-privacy`` |
| ``mesh serve`` beside the deployment          | ``mesh serve`` as ``mesh-serve`` (read-only on output ports) |
| one user-code deployment per domain          | one Dagster gRPC code server per domain, its runs forked from a process that loaded the domain (``deployment.code_server``) |
| daemon, webserver                            | ``dagster-daemon run`` and ``dagster-webserver`` over a gRPC workspace |
| the instance (``infra/dagster.yaml``)        | the same file, in ``$MESH_HOME/stack/dagster_home``         |

Every process runs in its own process group (:mod:`.processes`); their pids, ports and log files are
kept in ``$MESH_HOME/stack/stack.json`` (:mod:`.layout`), which ``mesh stack down`` reads to stop
exactly those processes (and their children: run workers) and to check that their ports are closed.
:mod:`.lifecycle` starts, checks and stops the whole; :mod:`.webserver` asks it over GraphQL and
gRPC; :mod:`.probe` measures what each domain's code server can reach (``mesh stack matrix``).
"""
