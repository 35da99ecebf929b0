"""Aggregate-only ports: differentially private counts, sums and means by group, with OpenDP.

A producer can grant a consumer a product *only* as aggregates (``port: aggregate`` in its
grants, with a privacy budget). The consumer declares the query on its input port::

    InputPort("customer_care.conversations", major=1,
              aggregate=Aggregate(group_by=["topic", "age_band"], measures=[count(), mean("satisfaction", 1, 5)],
                                  epsilon=0.5))

and receives one row per group with noisy measures; it never sees a row of the product.

How a release is computed (:func:`release`):

- **privacy unit**: the grant's ``privacy.unit`` column (e.g. ``policyholder_id``); each unit's
  rows are capped at ``max_contributions`` before anything is measured, which bounds how much one
  person can change any aggregate;
- **groups are public**: the group-by columns must have their allowed values in the contract
  (``invalidValues.validValues``), and every combination is released (absent ones with a noisy 0),
  so the set of groups reveals nothing;
- **counts** use OpenDP's ``count_by_categories`` chained with the (discrete) Laplace mechanism;
  **sums** clamp each value to the declared bounds and add Laplace noise calibrated by OpenDP to the
  sensitivity ``max_contributions * max(|lower|, |upper|)``; a **mean** is a noisy sum over a noisy
  count (post-processing). The query's epsilon is split evenly over its measurements (sequential
  composition); groups are disjoint, so each measurement covers all groups at that epsilon
  (parallel composition).
- **budget**: before anything is read, the query's epsilon is debited from the consumer's budget
  on that product in a durable ledger; a query that would exceed it is refused
  (:class:`PrivacyBudgetExhausted`).

OpenDP is imported only when a release is computed.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mesh_platform.contracts.model import Contract
from mesh_platform.foundations.settings import home_ledger


@dataclass(frozen=True)
class Measure:
    kind: str  # count | sum | mean
    column: str | None = None
    lower: float | None = None
    upper: float | None = None

    @property
    def name(self) -> str:
        return "dp_count" if self.kind == "count" else f"dp_{self.kind}_{self.column}"

    @property
    def measurements(self) -> int:
        return 2 if self.kind == "mean" else 1


def count() -> Measure:
    return Measure("count")


def dp_sum(column: str, lower: float, upper: float) -> Measure:
    return Measure("sum", column, float(lower), float(upper))


def mean(column: str, lower: float, upper: float) -> Measure:
    return Measure("mean", column, float(lower), float(upper))


@dataclass(frozen=True)
class Aggregate:
    group_by: tuple[str, ...]
    measures: tuple[Measure, ...]
    epsilon: float

    def __init__(self, group_by, measures, epsilon: float):
        object.__setattr__(self, "group_by", tuple(group_by))
        object.__setattr__(self, "measures", tuple(measures))
        object.__setattr__(self, "epsilon", float(epsilon))

    def columns(self, unit: str) -> list[str]:
        cols = [unit, *self.group_by] + [m.column for m in self.measures if m.column]
        return list(dict.fromkeys(cols))

    def as_metadata(self) -> dict:
        return {"group_by": list(self.group_by), "measures": [asdict(m) for m in self.measures], "epsilon": self.epsilon}

    @classmethod
    def from_metadata(cls, data: dict) -> "Aggregate":
        return cls(data["group_by"], [Measure(**m) for m in data["measures"]], data["epsilon"])


class PrivacyBudgetExhausted(PermissionError):
    """A query over the grant's budget on one product, or over the consumer's quota (``product`` None)."""

    def __init__(self, consumer: str, product: str | None, spent: float, budget: float, asked: float):
        self.consumer, self.product, self.spent, self.budget, self.asked = consumer, product, spent, budget, asked
        if product is None:
            super().__init__(
                f"domain {consumer!r} has spent {spent:g} of its quota privacy_epsilon {budget:g} over every product; "
                f"a query of {asked:g} is refused (quotas.privacy_epsilon in domains/{consumer}/domain.yaml, within the mesh ceiling)"
            )
        else:
            super().__init__(
                f"domain {consumer!r} has spent {spent:g} of its privacy budget {budget:g} (epsilon) on {product!r}; "
                f"a query of {asked:g} is refused"
            )


def group_values(contract: Contract, column: str) -> list:
    """The public partition of a group-by column: its allowed values in the contract."""
    values = contract.column(column).allowed_values()
    if values is not None:
        return values
    raise ValueError(
        f"cannot group {contract.id} by {column!r} privately: the contract lists no allowed values "
        "(invalidValues.validValues) for it, and releasing the groups present in the data would leak them"
    )


def validate(aggregate: Aggregate, contract: Contract) -> None:
    """Load-time check of an aggregate query against the producer's contract."""
    if aggregate.epsilon <= 0:
        raise ValueError("an aggregate query needs a positive epsilon")
    for column in aggregate.group_by:
        group_values(contract, column)
    for m in aggregate.measures:
        if m.kind not in ("count", "sum", "mean"):
            raise ValueError(f"unknown measure {m.kind!r}")
        if m.kind != "count":
            col = contract.column(m.column)
            if col.logical_type not in ("integer", "number"):
                raise ValueError(f"{m.kind} of {m.column!r} needs a numeric column, it is {col.logical_type}")
            if m.lower is None or m.upper is None or m.lower > m.upper:
                raise ValueError(f"{m.kind} of {m.column!r} needs bounds lower <= upper")


# -- the ledger ---------------------------------------------------------------------------------


def ledger_url(home: str | Path) -> str:
    """The privacy ledger of the mesh whose home is ``home``: the database ``MESH_PRIVACY_LEDGER``
    names when the deployment sets it, else SQLite in that home."""
    return os.environ.get("MESH_PRIVACY_LEDGER") or home_ledger(str(home))


class PrivacyLedgerUnknown(ValueError):
    """No ledger was given and the process names none (``MESH_PRIVACY_LEDGER``)."""


class PrivacyLedger:
    """Durable record of every epsilon spent, per consumer and product (SQLAlchemy URL).

    ``url``: the ledger (:func:`ledger_url` of the mesh's home); without it, the one the process was
    given in ``MESH_PRIVACY_LEDGER`` (the ``mesh`` command sets it for itself and the processes it
    starts). The ledger is never derived from the environment's mesh home here."""

    def __init__(self, url: str | None = None):
        import sqlalchemy as sa

        url = url or os.environ.get("MESH_PRIVACY_LEDGER")
        if not url:
            raise PrivacyLedgerUnknown("no privacy ledger: pass the mesh's (ledger_url(settings.home)) or set MESH_PRIVACY_LEDGER")
        self.url = url
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # autocommit driver mode, so that BEGIN IMMEDIATE below takes the write lock up front
            self.engine = sa.create_engine(self.url, connect_args={"isolation_level": None, "timeout": 30})
        else:
            self.engine = sa.create_engine(self.url)
        self.table = sa.Table(
            "privacy_spend",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("consumer", sa.String(200), nullable=False, index=True),
            sa.Column("product", sa.String(400), nullable=False, index=True),
            sa.Column("epsilon", sa.Float, nullable=False),
            sa.Column("query", sa.Text, nullable=False),
            sa.Column("run_id", sa.String(64)),
            sa.Column("at", sa.String(40), nullable=False),
        )
        self.table.metadata.create_all(self.engine)

    def _spent(self, con, consumer: str, product: str | None = None) -> float:
        """Epsilon ``consumer`` has spent on ``product`` (None: over every product), on connection ``con``."""
        import sqlalchemy as sa

        where = [self.table.c.consumer == consumer] + ([self.table.c.product == product] if product is not None else [])
        return float(con.execute(sa.select(sa.func.coalesce(sa.func.sum(self.table.c.epsilon), 0.0)).where(*where)).scalar() or 0.0)

    def spent(self, consumer: str, product: str) -> float:
        with self.engine.connect() as con:
            return self._spent(con, consumer, product)

    def spent_by(self, consumer: str) -> float:
        """Everything ``consumer`` has spent, over every product (its ``privacy_epsilon`` quota's use)."""
        with self.engine.connect() as con:
            return self._spent(con, consumer)

    def spend(self, consumer: str, product: str, epsilon: float, budget: float, query: str, run_id: str | None = None,
              quota: float | None = None) -> float:
        """Debit ``epsilon`` atomically, or raise :class:`PrivacyBudgetExhausted`; returns what remains of the grant's budget.

        ``budget`` is the grant's (this consumer, this product); ``quota`` the consumer domain's
        ``privacy_epsilon`` over every product. Both are checked in the same transaction as the debit.
        """
        with self.engine.connect() as con:
            if self.engine.dialect.name == "sqlite":
                con.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                con.begin()
                con.exec_driver_sql("LOCK TABLE privacy_spend IN EXCLUSIVE MODE")
            try:
                spent = self._spent(con, consumer, product)
                if spent + epsilon > budget + 1e-9:
                    raise PrivacyBudgetExhausted(consumer, product, spent, budget, epsilon)
                if quota is not None:
                    total = self._spent(con, consumer)
                    if total + epsilon > quota + 1e-9:
                        raise PrivacyBudgetExhausted(consumer, None, total, quota, epsilon)
                con.execute(
                    self.table.insert().values(
                        consumer=consumer, product=product, epsilon=epsilon, query=query, run_id=run_id,
                        at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    )
                )
                con.exec_driver_sql("COMMIT") if self.engine.dialect.name == "sqlite" else con.commit()
            except BaseException:
                con.exec_driver_sql("ROLLBACK") if self.engine.dialect.name == "sqlite" else con.rollback()
                raise
        return budget - spent - epsilon


# -- the release --------------------------------------------------------------------------------


@dataclass
class Release:
    frame: pd.DataFrame
    epsilon: float
    remaining: float
    columns: list[str] = field(default_factory=list)


def _bounded(df: pd.DataFrame, unit: str, max_contributions: int) -> pd.DataFrame:
    """Keep at most ``max_contributions`` rows per privacy unit (deterministically)."""
    return df[df.groupby(unit, sort=False).cumcount() < max_contributions]


def _noisy_counts(keys: pd.Series, categories: list[str], max_contributions: int, epsilon: float) -> list[float]:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance()
    meas = dp.binary_search_chain(
        lambda s: space >> dp.t.then_count_by_categories(categories=categories, null_category=False) >> dp.m.then_laplace(scale=s),
        d_in=max_contributions,
        d_out=epsilon,
    )
    return [float(v) for v in meas(keys.tolist())]


def _noisy_sums(sums: list[float], sensitivity: float, epsilon: float) -> list[float]:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=len(sums)), dp.l1_distance(T=float)
    meas = dp.binary_search_chain(lambda s: dp.m.make_laplace(*space, scale=s), d_in=sensitivity, d_out=epsilon)
    return [float(v) for v in meas([float(x) for x in sums])]


GROUP_SEPARATOR = "\x1f"  # joins a group's values into one key, in the public labels and in each row's key
MISSING_GROUP_VALUE = "\x1e"  # a row's missing group value: matches no public label


def _group_label(values) -> str:
    return GROUP_SEPARATOR.join(map(str, values))


def _group_key(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Each row's group as one string, in the form of :func:`_group_label`.

    Built column by column with vectorized string concatenation: a row-wise ``agg`` takes about a
    minute at 650k rows. A missing group value becomes :data:`MISSING_GROUP_VALUE`, so the row is
    counted in no group (it is outside the declared domain).
    """
    if not len(frame):
        return pd.Series([], dtype=str)
    parts = [frame[c].astype(str).fillna(MISSING_GROUP_VALUE) for c in columns]
    key = parts[0]
    for part in parts[1:]:
        key = key + GROUP_SEPARATOR + part
    return key


def compute(df: pd.DataFrame, contract: Contract, aggregate: Aggregate, unit: str, max_contributions: int) -> pd.DataFrame:
    """The differentially private release of ``aggregate`` over ``df`` (one row per public group)."""
    bounded = _bounded(df, unit, max_contributions)
    domains = [group_values(contract, c) for c in aggregate.group_by]
    groups = list(itertools.product(*domains))
    labels = [_group_label(g) for g in groups]
    key = _group_key(bounded, list(aggregate.group_by))
    share = aggregate.epsilon / sum(m.measurements for m in aggregate.measures)
    out = pd.DataFrame(groups, columns=list(aggregate.group_by))
    for m in aggregate.measures:
        if m.kind == "count":
            out[m.name] = [max(0, round(v)) for v in _noisy_counts(key, labels, max_contributions, share)]
            continue
        values = bounded[m.column].astype(float)
        present = values.notna()
        clamped = values[present].clip(m.lower, m.upper)
        sums = clamped.groupby(key[present]).sum().reindex(labels, fill_value=0.0).tolist()
        noisy_sum = _noisy_sums(sums, max_contributions * max(abs(m.lower), abs(m.upper)), share)
        if m.kind == "sum":
            out[m.name] = noisy_sum
        else:
            noisy_n = _noisy_counts(key[present], labels, max_contributions, share)
            out[m.name] = [
                None if n < 1 else min(m.upper, max(m.lower, s / n)) for s, n in zip(noisy_sum, noisy_n)
            ]
    return out


# -- the release service's client ------------------------------------------------------------------


class ReleaseRefused(PermissionError):
    """The privacy release service refused a release; the message is its reason."""


def request_release(url: str, token: str, product: str, major: int, query: dict, run_id: str | None, version: int | None, timeout: float = 300):
    """Ask the service at ``url`` for a release: (frame, epsilon, remaining), or :class:`ReleaseRefused`."""
    import json
    import urllib.error
    import urllib.request

    import pyarrow as pa

    body = json.dumps({"product": product, "major": major, "query": query, "run_id": run_id, "version": version}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/release", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            table = pa.ipc.open_stream(response.read()).read_all()
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", "")
        except ValueError:
            reason = ""
        raise ReleaseRefused(f"the privacy release service refused {product}: {reason or exc}") from None
    except urllib.error.URLError as exc:
        raise ReleaseRefused(f"the privacy release service at {url} does not answer: {exc.reason}") from None
    meta = table.schema.metadata or {}
    return table.to_pandas(), float(meta.get(b"mesh/epsilon", 0)), float(meta.get(b"mesh/remaining", 0))
