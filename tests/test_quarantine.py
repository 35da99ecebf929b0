"""Rejected source rows go to the owning domain's quarantine: stored, counted, checked, audited.

The real claims and customer_care assets are materialized through Dagster over simulated sources
with the simulator's bad rows (a landing file with an extra column, claims under unknown policies,
one claim with two states in one batch, one conversation about an unknown policy), in a temporary
lake and Dagster instance.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from conftest import ROOT, run_mesh
from mesh_platform.contracts.loader import ContractError, load_contract, load_yaml
from mesh_platform.governance.audit import audit_records
from mesh_platform.storage.io_manager import MeshIOManager
from mesh_platform.products.partitions import range_tags
from mesh_platform.sources.simulation import SourceLayout, simulate
from mesh_platform.sources.systems import LandingZone, SqlDatabase

CLAIMS = dg.AssetKey(["claims", "claims"])
LANDED = dg.AssetKey(["claims", "landed_claims"])
CONVERSATIONS = dg.AssetKey(["customer_care", "conversations"])
BAD_CLAIMS = {"unexpected_columns": 2, "unknown_policy": 3, "conflicting_states": 2}


class Mesh:
    """Sources, lake and instance of one test, and a way to materialize a domain's assets there."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.lake = root / "lake"
        self.layout = SourceLayout(root / "sources")
        monkeypatch.setenv("MESH_LAKE", str(self.lake))
        self.instance = dg.DagsterInstance.ephemeral()

    def simulate(self, scale: float, rejects: bool) -> dict:
        return simulate(self.layout.root, scale=scale, rejects=rejects)

    def materialize(self, domain: str, select: list[str] | None = None) -> dg.ExecuteInProcessResult:
        import importlib

        defs = importlib.import_module(f"domains.{domain}.definitions").defs
        resources = {
            "io_manager": MeshIOManager(domain=domain, lake=str(self.lake), home=str(self.root / "home")),
            "policy_admin": SqlDatabase(url=f"sqlite:///{self.layout.policy_db}"),
            "landing": LandingZone(path=str(self.layout.claims_landing)),
            "support_chat": LandingZone(path=str(self.layout.chat_export.parent)),
        }
        selection = [f"{domain}/{name}" for name in select] if select else None
        daily = {a.partitions_def for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.partitions_def is not None}
        tags = range_tags(daily.pop()) if daily else None  # claims is daily-partitioned: every day in one run
        return dg.materialize(list(defs.assets), resources=resources, instance=self.instance, selection=selection, raise_on_error=False, tags=tags)

    def metadata(self, key: dg.AssetKey) -> dict:
        event = self.instance.get_latest_materialization_event(key)
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    def check(self, key: dg.AssetKey, name: str = "quarantine"):
        check_key = dg.AssetCheckKey(key, name)
        execution = self.instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[check_key]
        return execution.event.dagster_event.event_specific_data

    def quarantined(self, asset: str, reason: str, domain: str = "claims") -> pd.DataFrame:
        runs = sorted((self.lake / domain / "_quarantine" / asset).iterdir(), key=lambda p: p.stat().st_mtime)
        return pd.read_parquet(runs[-1] / f"{reason}.parquet")

    def published(self, key: dg.AssetKey) -> pd.DataFrame:
        from deltalake import DeltaTable

        return DeltaTable(str(self.lake.joinpath(*key.path) / "v1")).to_pandas()


@pytest.fixture(scope="module")
def warned(tmp_path_factory):
    """150 good claims and the 7 bad claim rows (4.5%: above warnAbove 0, below failAbove 5%)."""
    monkeypatch = pytest.MonkeyPatch()
    mesh = Mesh(tmp_path_factory.mktemp("quarantine"), monkeypatch)
    summary = mesh.simulate(scale=0.25, rejects=True)
    results = {domain: mesh.materialize(domain) for domain in ("policies", "claims", "customer_care")}
    yield mesh, summary, results
    monkeypatch.undo()


def test_simulator_adds_bad_rows_only_when_asked(tmp_path):
    clean = simulate(tmp_path / "clean", scale=0.05)
    dirty = simulate(tmp_path / "dirty", scale=0.05, rejects=True)
    assert "rejects" not in clean and dirty["rejects"] == {"claims": BAD_CLAIMS, "customer_care": {"unknown_policy": 1}}
    assert {k: v for k, v in dirty.items() if k != "rejects"} == clean  # extra rows only: the good counts stay
    assert sorted(p.name for p in (tmp_path / "clean/claims_landing").glob("claims_*.csv"))[-1] == "claims_batch_0004.csv"
    extra = pd.read_csv(tmp_path / "dirty/claims_landing/claims_batch_0005.csv")
    assert "adjuster_note" in extra.columns and len(extra) == 2
    again = simulate(tmp_path / "again", scale=0.05, rejects=True)
    for name in ("claims_batch_0004.csv", "claims_batch_0005.csv"):
        assert (tmp_path / "dirty/claims_landing" / name).read_bytes() == (tmp_path / "again/claims_landing" / name).read_bytes()


def test_each_rejection_lands_in_the_domains_quarantine_with_its_reason(warned):
    mesh, summary, results = warned
    assert all(r.success for r in results.values()), {d: r.success for d, r in results.items()}

    layout = mesh.quarantined("landed_claims", "unexpected_columns")
    assert len(layout) == 2 and set(layout["claim_ref"]) == {"CLM-9000001", "CLM-9000002"}
    assert (layout["adjuster_note"] == "see attached photos").all()  # the rows as they landed, extra column too
    detail = json.loads(layout["_detail"].iloc[0])
    assert detail == {"file": "claims_batch_0005.csv", "unexpected": ["adjuster_note"], "missing": []}

    unknown = mesh.quarantined("claims", "unknown_policy")
    assert sorted(unknown["policy_no"]) == ["POL-9999991", "POL-9999992", "POL-9999993"]
    assert json.loads(unknown["_detail"].iloc[0]) == {
        "column": "policy_no", "references": "policies.policies", "examples": ["POL-9999991", "POL-9999992", "POL-9999993"],
    }

    conflict = mesh.quarantined("claims", "conflicting_states")
    assert list(conflict["claim_ref"].unique()) == ["CLM-9000021"] and sorted(conflict["status"]) == ["open", "paid"]
    detail = json.loads(conflict["_detail"].iloc[0])
    assert detail["within"] == "batch" and detail["key"] == ["claim_ref"] and detail["examples"] == ["CLM-9000021"]

    care = mesh.quarantined("conversations", "unknown_policy", domain="customer_care")
    assert care["conv_id"].tolist() == ["CNV-99000001"] and care["policy_no"].tolist() == ["POL-9999999"]
    # whose name to redact is unknown: the transcript is withheld, never stored raw (the export keeps it)
    assert care["transcript"].tolist() == ["[withheld: conversation about an unknown policy; the export keeps it]"]


def test_contact_details_in_rejected_rows_are_redacted_before_they_are_stored(tmp_path):
    """Rejects come straight from a source: the platform redacts emails and phone numbers in every
    text value before the quarantine stores them, and keeps the rest of the row as it was."""
    import dagster as dg

    from mesh_platform.quality import quarantine
    from mesh_platform.storage.lake import Lake

    rows = pd.DataFrame({
        "claim_ref": ["CLM-0000001", "CLM-0000002"],
        "policy_no": ["POL-1234567", "POL-7654321"],
        "note": ["call me on 07700 900123 or mail jo.smith@example.com", "see attached photos"],
        "amount": [12.5, 99.0],
    })
    lake = Lake(str(tmp_path / "lake"))
    held = quarantine.store(lake, dg.AssetKey(["claims", "claims"]), "run-1", [quarantine.Rejection("unknown_policy", rows, {"column": "policy_no"})])
    assert held.counts == {"unknown_policy": 2}
    stored = pd.read_parquet(tmp_path / "lake" / "claims" / "_quarantine" / "claims" / "run-1" / "unknown_policy.parquet")
    assert stored["note"].tolist() == ["call me on [phone] or mail [email]", "see attached photos"]
    assert stored["claim_ref"].tolist() == rows["claim_ref"].tolist() and stored["policy_no"].tolist() == rows["policy_no"].tolist()


def test_counts_per_reason_are_run_metadata(warned):
    mesh, summary, _ = warned
    assert mesh.metadata(LANDED)["mesh/quarantine"] == {"unexpected_columns": 2}
    claims = mesh.metadata(CLAIMS)
    # the product counts its own rejections and those of the intermediate it was built from
    assert claims["mesh/quarantine"] == BAD_CLAIMS and claims["mesh/quarantined_rows"] == 7
    assert claims["mesh/quarantine_uri"].startswith("file://") and "/claims/_quarantine/claims/" in claims["mesh/quarantine_uri"]
    assert mesh.metadata(CONVERSATIONS)["mesh/quarantine"] == {"unknown_policy": 1}


def test_nothing_is_silently_dropped(warned):
    mesh, summary, _ = warned
    landed = pd.concat([pd.read_csv(f, dtype=str) for f in sorted(mesh.layout.claims_landing.glob("claims_*.csv"))])
    published = mesh.published(CLAIMS)
    quarantined = pd.concat([mesh.quarantined("landed_claims", "unexpected_columns")]
                            + [mesh.quarantined("claims", r) for r in ("unknown_policy", "conflicting_states")])
    assert len(published) == summary["claims"]
    assert set(published["claim_id"]).isdisjoint(quarantined["claim_ref"])
    assert set(landed["claim_ref"]) == set(published["claim_id"]) | set(quarantined["claim_ref"])
    # every landed row is either the latest state of a published claim, an earlier state of one, or quarantined
    assert len(landed) == len(quarantined) + landed[landed["claim_ref"].isin(published["claim_id"])].shape[0]

    chats = pd.read_json(mesh.layout.chat_export, lines=True)
    assert len(chats) == len(mesh.published(CONVERSATIONS)) + 1


def test_check_warns_above_warn_and_below_fail(warned):
    mesh, _, _ = warned
    check = mesh.check(CLAIMS)
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["quarantined_rows"] == 7 and meta["published_rows"] == 150
    assert meta["quarantined_share"] == pytest.approx(7 / 157, abs=1e-6) and meta["fail_above"] == 0.05
    assert meta["carried_from"] == {"claims/landed_claims": {"unexpected_columns": 2}}
    assert "above warnAbove" in check.description
    events = mesh.check(dg.AssetKey(["claims", "claim_events"]))  # a product that rejected nothing passes
    assert events.passed is True and events.metadata["quarantined_rows"].value == 0


def test_quarantine_is_audited(warned):
    mesh, _, _ = warned
    records = [r for r in audit_records(mesh.instance, [LANDED, CLAIMS, CONVERSATIONS]) if r.kind == "quarantine"]
    by_asset = {r.asset_key: r for r in records}
    assert set(by_asset) == {"claims/landed_claims", "claims/claims", "customer_care/conversations"}
    assert by_asset["claims/claims"].reasons == {"conflicting_states": 2, "unknown_policy": 3}
    assert by_asset["claims/claims"].rows == 5 and by_asset["claims/claims"].product == "claims.claims"
    assert by_asset["claims/landed_claims"].reasons == {"unexpected_columns": 2}
    assert "/claims/_quarantine/landed_claims/" in by_asset["claims/landed_claims"].port
    run_id = mesh.instance.get_latest_materialization_event(CLAIMS).run_id
    assert by_asset["claims/claims"].run_id == run_id


def test_mesh_quarantine_lists_the_domains_history(warned):
    mesh, _, _ = warned
    result = run_mesh(["quarantine", "claims", "--json"], env={"MESH_LAKE": str(mesh.lake)})
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert {r["asset"]: r["counts"] for r in runs} == {
        "claims/landed_claims": {"unexpected_columns": 2},
        "claims/claims": {"conflicting_states": 2, "unknown_policy": 3},
    }
    text = run_mesh(["quarantine", "claims", "landed_claims"], env={"MESH_LAKE": str(mesh.lake)}).stdout
    assert "unexpected_columns: 2 row(s) (file=claims_batch_0005.csv, unexpected=['adjuster_note'])" in text


def test_failing_quarantine_blocks_publish_and_the_last_good_version_stays(tmp_path, monkeypatch):
    mesh = Mesh(tmp_path, monkeypatch)
    clean = mesh.simulate(scale=0.05, rejects=False)
    assert mesh.materialize("policies").success and mesh.materialize("claims").success
    assert mesh.check(CLAIMS).passed is True and mesh.metadata(CLAIMS)["mesh/quarantine"] == {}
    good = mesh.published(CLAIMS)
    assert len(good) == clean["claims"] == 30

    mesh.simulate(scale=0.05, rejects=True)  # the same 7 bad rows are now 7 of 37: above failAbove 5%
    result = mesh.materialize("claims")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "claims__claims")
    message = failure.step_failure_data.error.message + (failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else "")
    assert "claims/claims quarantined 7 of 37 rows (18.92%), above failAbove 5.00%" in message
    assert "nothing was published" in message
    check = mesh.check(CLAIMS)
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.ERROR
    pd.testing.assert_frame_equal(mesh.published(CLAIMS), good)  # last good version
    assert len(mesh.quarantined("claims", "unknown_policy")) == 3  # kept although nothing was published
    records = [r for r in audit_records(mesh.instance, [CLAIMS]) if r.kind == "quarantine"]
    assert records and records[-1].run_id == result.run_id


def test_limits_are_declared_on_the_check_spec():
    from domains.claims.definitions import defs

    def spec(key):
        assets = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and key in a.keys)
        return next(s for s in assets.check_specs if s.name == "quarantine")

    assert spec(CLAIMS).blocking and "fails above 5.00%" in spec(CLAIMS).description
    events = spec(dg.AssetKey(["claims", "claim_events"]))
    assert not events.blocking  # no limits in its contract: warns at any quarantined row, never blocks


@pytest.mark.parametrize(
    "value, field, message",
    [
        ({"warnAbove": 2}, "customProperties[quarantine].value.warnAbove", "between 0 and 1"),
        ({"failAbov": 0.1}, "customProperties[quarantine].value.failAbov", "unknown quarantine limit"),
        ({"warnAbove": 0.2, "failAbove": 0.1}, "customProperties[quarantine].value.failAbove", "below warnAbove"),
        ({"failAbove": "5%"}, "customProperties[quarantine].value.failAbove", "between 0 and 1"),
        (0.05, "customProperties[quarantine].value", "must be a mapping"),
    ],
)
def test_bad_limits_fail_at_contract_load_naming_file_and_field(tmp_path, value, field, message):
    import yaml

    raw = load_yaml(ROOT / "domains/claims/contracts/claims.yaml")
    raw["customProperties"] = [{"property": "quarantine", "value": value}]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ContractError) as exc:
        load_contract(path)
    problem = exc.value.problems[0]
    assert problem.file.endswith("claims.yaml") and problem.field == field and message in problem.message


def test_other_domains_storage_policies_never_reach_a_quarantine():
    quarantined = "arn:aws:s3:::acme-mesh-lake/lake/claims/_quarantine/claims/some-run/unknown_policy.parquet"
    for path in sorted((ROOT / "infra" / "iam").glob("*.json")):
        document = json.loads(path.read_text())
        resources = [r for s in document["Statement"] if s["Effect"] == "Allow" and "s3:GetObject" in s["Action"] for r in s["Resource"]]
        readable = any(fnmatch.fnmatchcase(quarantined, r) for r in resources)
        assert readable == (path.stem == "claims"), path.name


def test_a_reason_to_frame_mapping_is_enough_and_no_limits_means_warn_never_block(tmp_path, monkeypatch):
    from mesh_platform import Domain
    from mesh_platform.contracts.registry import ContractRegistry
    from mesh_platform.quality.quarantine import Screened

    fixture = Path(__file__).parent / "fixtures" / "quality_mesh"
    monkeypatch.setenv("MESH_DOMAINS", str(fixture))
    monkeypatch.setenv("MESH_LAKE", str(tmp_path / "lake"))
    domain = Domain.load(fixture / "shop" / "definitions.py")
    good = pd.DataFrame({"order_id": ["O-1", "O-2"], "status": ["open", "open"], "amount": [1.0, 2.0], "coupon": [None, None]})
    returned = {"value": Screened(good, {"negative_amount": pd.DataFrame({"order_id": ["O-3"] * 3, "amount": [-1.0] * 3})})}

    @domain.product("orders")
    def orders():
        return returned["value"]

    @domain.product("order_stats", inputs={"orders": "orders"})
    def order_stats(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.groupby("status").size().rename("orders").reset_index()

    assets, _ = domain.build_assets(ContractRegistry.discover(fixture))
    instance = dg.DagsterInstance.ephemeral()
    io = {"io_manager": MeshIOManager(lake=str(tmp_path / "lake"))}
    result = dg.materialize(assets, resources=io, instance=instance, raise_on_error=False)
    assert result.success  # 3 of 5 rows quarantined (60%), but the contract sets no failAbove
    key = dg.AssetKey(["shop", "orders"])
    check_key = dg.AssetCheckKey(key, "quarantine")
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])[check_key].event.dagster_event.event_specific_data
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["quarantined_share"].value == pytest.approx(0.6)
    runs = list((tmp_path / "lake" / "shop" / "_quarantine" / "orders").iterdir())
    assert len(pd.read_parquet(runs[0] / "negative_amount.parquet")) == 3

    returned["value"] = Screened(good, {"Not A Reason": good})
    result = dg.materialize(assets, resources=io, instance=instance, raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert "a quarantine reason must be snake_case" in error.message + (error.cause.message if error.cause else "")
    assert len(list((tmp_path / "lake" / "shop" / "_quarantine" / "orders").iterdir())) == 1  # nothing half-written


@pytest.mark.parametrize(
    "values, known, bad",
    [
        (pd.Series(["P1", "P9", None, "P2"], dtype="str"), pd.Series(["P1", "P2", None], dtype="str"), [False, True, True, False]),
        (pd.Series([1, 2, None], dtype="Int64"), [1, 3], [False, True, True]),
        (pd.Series(["1", "2"], dtype="str"), [1, "2"], [True, False]),  # mixed types: pandas' own comparison
        (pd.Series([], dtype="str"), pd.Series(["P1"], dtype="str"), []),
    ],
)
def test_unresolved_references_match_pandas_semantics(values, known, bad):
    from mesh_platform.quality.quarantine import Rejects

    frame = pd.DataFrame({"ref": values.set_axis(range(10, 10 + len(values)))})  # a non-default index is kept
    kept = Rejects().unresolved(frame, "ref", known)
    assert list(kept.index) == [i for i, b in zip(frame.index, bad) if not b]


def test_one_bad_value_or_line_is_quarantined_and_the_good_rows_are_published(tmp_path, monkeypatch):
    """A landed batch with a line of too many fields, unreadable dates and amounts, a claim reported
    before the partitions begin and a broken JSON line: each of those rows is quarantined with its
    reason, the good rows of the same files are published, and no raw library error reaches the user."""
    mesh = Mesh(tmp_path, monkeypatch)
    mesh.simulate(scale=0.25, rejects=False)
    batch = sorted(mesh.layout.claims_landing.glob("claims_*.csv"))[-1]
    good = pd.read_csv(batch).iloc[0]
    header = "claim_ref,policy_no,claim_type,incident_date,reported_at,amount_claimed,status,settled_at,amount_paid"

    def row(ref, incident=good.incident_date, reported=good.reported_at, amount="100.0", extra=""):
        return f"{ref},{good.policy_no},theft,{incident},{reported},{amount},open,,0.0{extra}"

    (mesh.layout.claims_landing / "claims_batch_0009.csv").write_text("\n".join([
        header,
        row("CLM-9100001"),                                   # good: published
        row("CLM-9100002", extra=",surplus"),                  # a line of ten fields
        row("CLM-9100003", reported="2026-13-45T10:00:00"),     # a reporting day that does not exist
        row("CLM-9100004", reported="1999-01-04T10:00:00"),     # before the first partition day
        row("CLM-9100005", incident="2026-13-45"),              # an incident date that does not exist
        row("CLM-9100006", amount="twelve"),                    # an amount that is not a number
    ]) + "\n")
    (mesh.layout.claims_landing / "claim_events_batch_0009.jsonl").write_text(
        json.dumps({"claim_ref": "CLM-9100001", "event": "opened", "at": good.reported_at, "event_no": 990001}) + "\n{not json\n"
    )
    assert mesh.materialize("policies").success
    result = mesh.materialize("claims")
    assert result.success, [e.message for e in result.get_step_failure_events()]
    published = mesh.published(CLAIMS)
    assert "CLM-9100001" in set(published["claim_id"])
    assert not set(published["claim_id"]) & {f"CLM-910000{i}" for i in range(2, 7)}
    malformed = mesh.quarantined("landed_claims", "malformed_line")
    assert len(malformed) == 1 and "CLM-9100002" in malformed["fields"].iloc[0] and json.loads(malformed["_detail"].iloc[0])["file"] == "claims_batch_0009.csv"
    orphans = mesh.quarantined("landed_claims", "no_partition_day")
    assert sorted(orphans["claim_ref"]) == ["CLM-9100003", "CLM-9100004"]
    unparseable = mesh.quarantined("landed_claims", "unparseable_value")
    assert sorted(unparseable["claim_ref"]) == ["CLM-9100005", "CLM-9100006"]
    detail = json.loads(unparseable["_detail"].iloc[0])
    assert detail["examples"] == {"incident_date": ["2026-13-45"], "amount_claimed": ["twelve"]}
    assert len(mesh.quarantined("landed_claim_events", "malformed_line")) == 1
    assert 990001 in set(mesh.published(dg.AssetKey(["claims", "claim_events"]))["event_id"])
