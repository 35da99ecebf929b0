"""io_roundtrip: publish a product through the platform and read it back, against plain Parquet.

One round trip = DataFrame in, DataFrame out: the producer's write (contract enforcement, Parquet,
atomic publish) plus a consumer's full read. Cases, each in its own fresh process on the same
synthetic table (:mod:`benchmarks.synthetic_table`, 11 mixed-type columns):

``pyarrow`` (the baseline)
    ``pa.Table.from_pandas`` + ``pq.write_table`` (snappy) + ``pq.read_table`` + ``to_pandas``,
    with the same ``to_pandas`` options as the platform (dates as ``datetime64``), so the ratio
    isolates what the platform adds: enforcement, the staging file, ``fsync`` and the rename.
``deltalake``
    raw delta-rs, no platform: ``write_deltalake(mode="overwrite")`` + ``DeltaTable.to_pyarrow_table``
    + ``to_pandas``: what the table format itself costs over plain Parquet.
``platform``
    what ``MeshIOManager`` does, called directly: ``conform(df, contract, defer_key=True)``, one
    Delta commit on top of the port's snapshot (``mesh_platform.storage.delta.write``) whose data files
    are written while the primary key's uniqueness check runs (``mesh_platform.storage.gate``; only the
    commit waits for it), a read of that version
    (``delta.read``, which checks the commit), ``to_pandas``. After the timed round trips this case
    also measures **storage**: bytes of one version, of the table with every version kept (growth per
    version), and after a vacuum keeping one version (``details.storage``, and a note).
``platform, key check before the write``
    the same with the primary key's uniqueness checked in ``conform``, before the write (the path
    before the overlap): what the overlap saves, measured in the same run.
``platform MeshIOManager``
    the same through ``MeshIOManager.handle_output`` / ``load_input`` with Dagster-built contexts
    (adds the registry lookup and output metadata).
``platform write-audit-publish``
    what a product's materialization really does since the quality gate: ``quality.audit`` in the
    step (structural conform, every quality rule in DuckDB but the primary key's, which run while
    the write runs, the GX report written to the lake before the commit), then
    ``MeshIOManager.handle_output`` of the audited table and ``load_input``. Only when
    ``mesh_platform.quality.checks`` exists.
``platform write-audit-publish, key check before the write``
    the same with every rule, the key's included, run in the audit before the write.
``platform write-audit-publish + quotas``
    the same plus the domain's quota check before publish (rows, bytes, and the storage its lake
    prefix holds, listed on every publish): the cost of quotas on the publish path.
``dagster FilesystemIOManager``
    Dagster's default IO manager (pickle), same contexts.
``UPathIOManager parquet``
    a plain ``dagster.UPathIOManager`` subclass using ``DataFrame.to_parquet`` / ``pd.read_parquet``.

The reported time of a round trip is the sum of its timed phases (wall clock; CPU seconds of all
threads in ``details.cpu_median_s``); Dagster contexts are built outside them. Heavy imports stay inside functions: this module is imported by the runner too.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from benchmarks.harness import RunConfig, run_cases, self_peak_rss_mb, summarize, time_repeated
from benchmarks.results import BenchmarkResult, Case, Target
from benchmarks.quality import quality_module_present
from benchmarks.synthetic_table import rows_label

NAME = "io_roundtrip"
DESCRIPTION = "contract-enforced write + Delta commit + read of a mixed-type table, vs raw pyarrow; port storage per version and after vacuum"
BASELINE = "pyarrow"
AUDITED = "platform write-audit-publish"
QUOTAS = "platform write-audit-publish + quotas"
SEQUENTIAL = "platform, key check before the write"
AUDITED_SEQUENTIAL = "platform write-audit-publish, key check before the write"
METHODS = ["pyarrow", "deltalake", "platform", SEQUENTIAL, "platform MeshIOManager", AUDITED, AUDITED_SEQUENTIAL, QUOTAS, "dagster FilesystemIOManager", "UPathIOManager parquet"]
TARGET_RATIO = 1.1  # the issue "IO at full size": conform, audit, publish, read within 1.1x raw pyarrow
TARGET_CASES = ("platform", "platform MeshIOManager", AUDITED, QUOTAS)

# rows -> (warm-up calls, timed repeats)
FULL_SIZES = {1_000_000: (1, 5), 5_000_000: (1, 3)}
QUICK_SIZES = {20_000: (1, 2)}

RoundTrip = Callable[[Any], tuple[Any, dict[str, float]]]


# -- the round trips (run in the child process) --------------------------------------------------


class Phases(dict):
    """Wall seconds per named phase of one round trip (``with phases("write"): ...``); CPU seconds
    (all threads) per phase in ``.cpu``."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: dict[str, float] = {}
        self.nested: dict[str, float] = {}  # wall seconds of parts of a phase (not added to the total)

    @contextmanager
    def __call__(self, name: str):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


def _pyarrow(work: Path, contract) -> RoundTrip:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = work / "raw.parquet"

    def roundtrip(df):
        phases = Phases()
        with phases("to_arrow"):
            table = pa.Table.from_pandas(df, preserve_index=False)
        with phases("write"):
            pq.write_table(table, path, compression="snappy")
        with phases("read"):
            back = pq.read_table(path)
        with phases("to_pandas"):
            out = back.to_pandas(date_as_object=False)
        return out, phases

    return roundtrip


def _deltalake(work: Path, contract) -> RoundTrip:
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    path = str(work / "raw_delta")

    def roundtrip(df):
        phases = Phases()
        with phases("to_arrow"):
            table = pa.Table.from_pandas(df, preserve_index=False)
        with phases("write"):
            write_deltalake(path, table, mode="overwrite")
        with phases("read"):
            back = DeltaTable(path).to_pyarrow_table()
        with phases("to_pandas"):
            out = back.to_pandas(date_as_object=False)
        return out, phases

    return roundtrip


def _platform(work: Path, contract, overlap: bool = True) -> RoundTrip:
    from mesh_platform.contracts import conform
    from mesh_platform.contracts.enforcement import check_key
    from mesh_platform.storage import delta
    from mesh_platform.storage.gate import CommitGate
    from mesh_platform.storage.io_manager import to_pandas
    from mesh_platform.storage.lake import Lake

    lake = Lake(str(work / "lake"))
    relpath = Lake.port_path(contract.domain, contract.name, contract.major)
    port = f"{contract.id} v{contract.major}"

    def roundtrip(df):
        phases = Phases()
        with phases("conform"):  # every check but the primary key's uniqueness, which overlaps the write
            table = conform(df, contract, defer_key=overlap)
            gate = CommitGate(lambda: check_key(table, contract), "primary key") if overlap else None
        with phases("write"):
            version = delta.write(lake, relpath, table, port, delta.snapshot(lake, relpath, port), gate=gate)
        with phases("read"):
            back, _ = delta.read(lake, relpath, port, version=version)
        with phases("to_pandas"):
            out = to_pandas(back)
        return out, phases

    return roundtrip


def storage_growth(work: Path, contract) -> dict[str, Any]:
    """Bytes the platform case's port keeps: one version, every version so far, after a vacuum to one."""
    from mesh_platform.storage import delta
    from mesh_platform.storage.lake import Lake

    lake = Lake(str(work / "lake"))
    relpath = Lake.port_path(contract.domain, contract.name, contract.major)
    port = f"{contract.id} v{contract.major}"
    latest = delta.current_version(lake, relpath, port)
    versions = latest + 1
    one = delta.version_bytes(lake, relpath, latest)
    kept = delta.size(lake, relpath)
    removed = delta.vacuum(lake, relpath, port, versions=1, days=None)
    after = delta.size(lake, relpath)
    return {
        "versions": versions,
        "bytes_one_version": one,
        "bytes_all_versions": kept,
        "growth_per_version_bytes": (kept - after) // max(versions - 1, 1),
        "bytes_after_vacuum_keep_1": after,
        "files_vacuumed": len(removed),
    }


def _through_io_manager(io_manager, key: list[str], output_metadata: dict, input_metadata: dict, before_output=None) -> RoundTrip:
    """A round trip through any Dagster IO manager with freshly built contexts (not timed).

    ``before_output`` (a function of the DataFrame and the round trip's phases) runs first, timed
    as its own ``audit`` phase, and what it returns is handed to the IO manager.
    """
    import dagster as dg

    asset_key = dg.AssetKey(key)

    def roundtrip(df):
        out_ctx = dg.build_output_context(asset_key=asset_key, name="result", definition_metadata=output_metadata)
        in_ctx = dg.build_input_context(asset_key=asset_key, definition_metadata=input_metadata, upstream_output=out_ctx)
        phases = Phases()
        obj = df
        if before_output is not None:
            with phases("audit"):
                obj = before_output(df, phases)
        with phases("handle_output"):
            io_manager.handle_output(out_ctx, obj)
        with phases("load_input"):
            out = io_manager.load_input(in_ctx)
        return out, phases

    return roundtrip


def _mesh_io_manager(work: Path, contract) -> RoundTrip:
    from mesh_platform.storage.io_manager import CONTRACT_ID, PORT_MAJOR, MeshIOManager

    meta = {CONTRACT_ID: contract.id}
    return _through_io_manager(MeshIOManager(lake=str(work / "lake")), [contract.domain, contract.name], meta, {**meta, PORT_MAJOR: contract.major})


def _write_audit_publish(work: Path, contract, with_quotas: bool = False, overlap: bool = True) -> RoundTrip:
    from benchmarks.quality import run_audit
    from mesh_platform.storage.io_manager import CONTRACT_ID, PORT_MAJOR, MeshIOManager
    from mesh_platform.storage.lake import Lake
    from mesh_platform.governance.quotas import BUILT_IN_DEFAULTS, Quotas, check_publish

    lake = Lake(str(work / "lake"))  # where audit writes the GX report, as a product's step does
    quotas = Quotas(contract.domain, dict(BUILT_IN_DEFAULTS))

    def before_output(df, phases):
        audited = run_audit(contract, df, lake, defer_key=overlap)[0]  # as a product's step: the key's rules overlap the write
        if with_quotas:  # what the product's step adds before publish: rows, bytes, the domain's storage
            started = time.perf_counter()  # part of `audit`, also reported alone
            check_publish(quotas, contract.name, audited.table.num_rows, audited.table.nbytes, lake)
            phases.nested["quota_check"] = time.perf_counter() - started
        return audited

    meta = {CONTRACT_ID: contract.id, PORT_MAJOR: contract.major}
    return _through_io_manager(MeshIOManager(lake=str(work / "lake")), [contract.domain, contract.name], meta, meta, before_output=before_output)


def _filesystem_io_manager(work: Path, contract) -> RoundTrip:
    from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager

    return _through_io_manager(PickledObjectFilesystemIOManager(base_dir=str(work / "fs")), [contract.domain, contract.name], {}, {})


def _upath_parquet_io_manager(work: Path, contract) -> RoundTrip:
    import dagster as dg
    import pandas as pd
    from upath import UPath

    class ParquetIOManager(dg.UPathIOManager):
        """The plain Parquet IO manager a team would write with Dagster alone."""

        extension = ".parquet"

        def dump_to_path(self, context, obj, path):
            with path.open("wb") as sink:
                obj.to_parquet(sink, index=False)

        def load_from_path(self, context, path):
            with path.open("rb") as source:
                return pd.read_parquet(source)

    return _through_io_manager(ParquetIOManager(base_path=UPath(work / "upath")), [contract.domain, contract.name], {}, {})


FACTORIES: dict[str, Callable[[Path, Any], RoundTrip]] = {
    "pyarrow": _pyarrow,
    "deltalake": _deltalake,
    "platform": _platform,
    SEQUENTIAL: lambda work, contract: _platform(work, contract, overlap=False),
    "platform MeshIOManager": _mesh_io_manager,
    AUDITED: _write_audit_publish,
    AUDITED_SEQUENTIAL: lambda work, contract: _write_audit_publish(work, contract, overlap=False),
    QUOTAS: lambda work, contract: _write_audit_publish(work, contract, with_quotas=True),
    "dagster FilesystemIOManager": _filesystem_io_manager,
    "UPathIOManager parquet": _upath_parquet_io_manager,
}


def measure_case(method: str, rows: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Child-process entry: time ``repeats`` round trips of ``method`` on ``rows`` rows."""
    from benchmarks.synthetic_table import make_frame, write_contract

    with tempfile.TemporaryDirectory(prefix="bench-io-") as tmp:
        work = Path(tmp)
        os.environ["MESH_DOMAINS"] = str(work / "domains")  # where MeshIOManager's registry looks
        from mesh_platform.contracts import load_contract

        contract = load_contract(write_contract(work))
        df = make_frame(rows)
        roundtrip = FACTORIES[method](work, contract)
        setup_rss = self_peak_rss_mb()
        phases: list[Phases] = []

        def once():
            out, timed = roundtrip(df)
            if len(out) != rows or list(out.columns) != list(df.columns):
                raise AssertionError(f"{method}: round trip returned {len(out)} rows, columns {list(out.columns)}")
            phases.append(timed)

        time_repeated(once, repeats=repeats, warmup=warmup)
        measured = phases[warmup:]
        storage = {"storage": storage_growth(work, contract)} if method == "platform" else {}
        return {
            **storage,
            **summarize([sum(p.values()) for p in measured], [sum(p.cpu.values()) for p in measured]),
            "phases_median_s": {name: summarize([p[name] for p in measured])["median_s"] for name in measured[0]},
            "nested_median_s": {name: summarize([p.nested[name] for p in measured])["median_s"] for name in measured[0].nested},
            "setup_peak_rss_mb": setup_rss,
            "peak_rss_mb_in_process": self_peak_rss_mb(),
        }


# -- the benchmark (runs in the parent) ----------------------------------------------------------


def _phase_note(result: BenchmarkResult, size: str) -> str:
    parts = []
    for method in ("pyarrow", "deltalake", "platform", SEQUENTIAL, AUDITED, AUDITED_SEQUENTIAL):
        case = result.case(method, size)
        if case:
            phases = ", ".join(f"{k} {v:.3f}" for k, v in case.details["phases_median_s"].items())
            parts.append(f"{method}: {phases}")
    quotas = result.case(QUOTAS, size)
    if quotas and quotas.details.get("nested_median_s", {}).get("quota_check") is not None:
        parts.append(f"{QUOTAS}: its quota check alone {quotas.details['nested_median_s']['quota_check'] * 1000:.2f} ms")
    return f"phases at {size} (median s): " + "; ".join(parts)


def run(config: RunConfig) -> BenchmarkResult:
    result = BenchmarkResult(NAME, DESCRIPTION, baseline=f"{BASELINE} (pa.Table.from_pandas + pq.write_table + pq.read_table + to_pandas)")
    sizes = QUICK_SIZES if config.quick else FULL_SIZES
    if config.sizes:
        sizes = {n: FULL_SIZES.get(n, (1, 3)) for n in config.sizes}
    methods = METHODS if quality_module_present() else [m for m in METHODS if m not in (AUDITED, AUDITED_SEQUENTIAL, QUOTAS)]
    for rows, (warmup, repeats) in sizes.items():
        size = rows_label(rows)
        config.log(f"  {NAME}: {', '.join(methods)} @ {size}")
        cases = [{"method": m, "rows": rows, "warmup": warmup, "repeats": repeats} for m in methods]
        payloads = run_cases(f"{__name__}:measure_case", cases, isolate=not config.quick)
        for method, payload in zip(methods, payloads):
            details = {k: v for k, v in payload.items() if k not in ("median_s", "peak_rss_mb")}
            details.update(rows=rows, warmup=warmup, repeats=repeats)
            result.cases.append(
                Case(method, size, payload["median_s"], None if method == BASELINE else BASELINE,
                     cpu_seconds=payload["cpu_median_s"], peak_rss_mb=payload["peak_rss_mb"], details=details)
            )
        result.notes.append(_phase_note(result, size))
        platform = result.case("platform", size)
        if platform and "storage" in platform.details:
            s = platform.details["storage"]
            result.notes.append(
                f"storage at {size} (platform port, Delta): one version {s['bytes_one_version']:,} B; {s['versions']} versions kept "
                f"{s['bytes_all_versions']:,} B (+{s['growth_per_version_bytes']:,} B per version); after a vacuum keeping 1 version "
                f"{s['bytes_after_vacuum_keep_1']:,} B ({s['files_vacuumed']} file(s) deleted)"
            )
    result.add_ratios()
    for rows in sizes:
        for method in TARGET_CASES:
            case = result.case(method, rows_label(rows))
            if case is None:
                continue
            result.targets.append(Target(f"{method} <= {TARGET_RATIO}x raw pyarrow @ {case.size}", TARGET_RATIO, "x", case.ratio))
    result.notes.append("peak RSS includes the input DataFrame (built before timing; see details.setup_peak_rss_mb)")
    return result
