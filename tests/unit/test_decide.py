"""The pure decision logic: given source rows, coupling states and target rows, what to do."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tablesync.apps.values import content_hash
from tablesync.config.model import MappingSpec
from tablesync.store.couplings import CouplingState
from tablesync.sync.decide import (
    FAIL,
    IGNORE,
    INSERT,
    SKIP,
    UNCHANGED,
    UPDATE,
    decide,
)
from tablesync.sync.plan import canonical_values, compile_plan


def spec(**overrides: Any) -> MappingSpec:
    data: dict[str, Any] = {
        "name": "CUSTOMER",
        "local": {"app": "erp", "table": "customers", "key": "id", "modified": "modified_at"},
        "integration": {"app": "crm", "table": "accounts", "key": "account_id", "modified": "modifiedon"},
        "direction": "to_integration",
        "fields": [
            {"local": "name", "integration": "name"},
            {"local": "country", "integration": "country_code", "transform": "upper"},
            {"integration": "customertypecode", "constant": 3},
        ],
    }
    data.update(overrides)
    return MappingSpec.model_validate(data)


PLAN = compile_plan(spec(), "to_integration")


def synced(source_key: str, target_key: str, row: dict[str, Any], job: int = 1) -> CouplingState:
    """A coupling as it is after a successful sync of `row`."""
    return CouplingState(
        id=int(source_key), source_key=source_key, target_key=target_key, state="synced",
        source_hash=content_hash(canonical_values(row, PLAN.source_columns)), target_hash=None,
        last_result="success", last_job_id=job,
    )


def test_uncoupled_row_is_inserted_with_transformed_values_and_constants() -> None:
    [d] = decide(PLAN, [{"id": 1, "name": "Ann", "country": "dk"}], {}, {})
    assert d.action == INSERT
    assert d.values == {"name": "Ann", "country_code": "DK", "customertypecode": 3}
    assert d.target_key is None  # the target database makes the key


def test_key_mapped_from_source_is_known_before_insert() -> None:
    plan = compile_plan(spec(fields=[{"local": "id", "integration": "account_id"}, {"local": "name", "integration": "name"}]),
                        "to_integration")
    [d] = decide(plan, [{"id": 7, "name": "Ann"}], {}, {})
    assert d.action == INSERT and d.target_key == "7"


def test_unchanged_source_hash_is_unchanged_without_reading_the_target() -> None:
    row = {"id": 1, "name": "Ann", "country": "dk"}
    [d] = decide(PLAN, [row], {"1": synced("1", "100", row)}, {"100": {"name": "someone edited me"}})
    assert d.action == UNCHANGED


def test_changed_source_updates_only_the_differing_target_columns() -> None:
    old = {"id": 1, "name": "Ann", "country": "dk"}
    new = {"id": 1, "name": "Anna", "country": "dk"}
    target = {"account_id": 100, "name": "Ann", "country_code": "DK", "customertypecode": 3}
    [d] = decide(PLAN, [new], {"1": synced("1", "100", old)}, {"100": target})
    assert d.action == UPDATE
    assert d.changes == {"name": ["Ann", "Anna"]}
    assert d.target_key == "100"


def test_source_changed_but_target_already_equal_is_unchanged() -> None:
    old = {"id": 1, "name": "Ann", "country": "dk"}
    new = {"id": 1, "name": "Anna", "country": "dk"}
    target = {"name": "Anna", "country_code": "DK", "customertypecode": 3}
    [d] = decide(PLAN, [new], {"1": synced("1", "100", old)}, {"100": target})
    assert d.action == UNCHANGED


def test_failed_coupling_is_reconsidered_even_if_source_unchanged() -> None:
    row = {"id": 1, "name": "Ann", "country": "dk"}
    failed = synced("1", "100", row)
    failed = CouplingState(**{**failed.__dict__, "last_result": "failure"})
    [d] = decide(PLAN, [row], {"1": failed}, {"100": {"name": "Old", "country_code": "DK", "customertypecode": 3}})
    assert d.action == UPDATE


def test_skipped_coupling_is_never_touched() -> None:
    row = {"id": 1, "name": "Changed", "country": "dk"}
    c = CouplingState(id=1, source_key="1", target_key="100", state="synced", source_hash="x", target_hash="y",
                      last_result="failure", skipped=True)
    [d] = decide(PLAN, [row], {"1": c}, {"100": {"name": "Old"}})
    assert d.action == SKIP and not d.values


def test_sync_only_coupled_ignores_uncoupled_rows() -> None:
    plan = compile_plan(spec(sync_only_coupled=True), "to_integration")
    [d] = decide(plan, [{"id": 1, "name": "Ann", "country": "dk"}], {}, {})
    assert d.action == IGNORE


def test_transform_failure_fails_only_that_record() -> None:
    from tablesync.config.transforms import register_transform

    @register_transform("explode_on_x")
    def _explode(value: Any) -> Any:
        if value == "x":
            raise ValueError("no x please")
        return value

    plan = compile_plan(spec(fields=[{"local": "name", "integration": "name", "transform": "explode_on_x"}]), "to_integration")
    out = decide(plan, [{"id": 1, "name": "x"}, {"id": 2, "name": "ok"}], {}, {})
    assert [d.action for d in out] == [FAIL, INSERT]
    assert "transform explode_on_x failed on name='x': no x please" in (out[0].message or "")


def test_pending_intent_whose_row_landed_completes_the_insert() -> None:
    row = {"id": 1, "name": "Ann", "country": "dk"}
    intent = CouplingState(id=1, source_key="1", target_key="100", state="pending", source_hash=None, target_hash=None,
                           last_result=None)
    [d] = decide(PLAN, [row], {"1": intent}, {"100": {"name": "Ann", "country_code": "DK", "customertypecode": 3}})
    assert d.action == UNCHANGED and d.completes_insert


def test_pending_intent_whose_row_is_missing_inserts_under_the_reserved_key() -> None:
    row = {"id": 1, "name": "Ann", "country": "dk"}
    intent = CouplingState(id=1, source_key="1", target_key="100", state="pending", source_hash=None, target_hash=None,
                           last_result=None)
    [d] = decide(PLAN, [row], {"1": intent}, {})
    assert d.action == INSERT and d.target_key == "100"


def test_coupled_target_gone_fails_with_a_clear_message() -> None:
    row = {"id": 1, "name": "Ann2", "country": "dk"}
    [d] = decide(PLAN, [row], {"1": synced("1", "100", {"id": 1, "name": "Ann", "country": "dk"})}, {})
    assert d.action == FAIL and d.message == "the coupled integration record 100 no longer exists"


def test_from_integration_plan_reads_integration_columns() -> None:
    plan = compile_plan(spec(direction="from_integration", fields=[{"local": "name", "integration": "fullname"}]),
                        "from_integration")
    [d] = decide(plan, [{"account_id": "a-1", "fullname": "Bo"}], {}, {})
    assert d.action == INSERT and d.values == {"name": "Bo"} and d.source_key == "a-1"


# -- property: applying the decisions converges -----------------------------------------------

names = st.one_of(st.none(), st.text(max_size=5))
countries = st.sampled_from([None, "dk", "DK", "se", " no"])
rows_strategy = st.lists(st.fixed_dictionaries({"name": names, "country": countries}), min_size=1, max_size=12)


def simulate(rows: list[dict[str, Any]], couplings: dict[str, CouplingState], target: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Apply one run's decisions to an in-memory target the way the engine does."""
    counts: dict[str, int] = {}
    for d in decide(PLAN, rows, couplings, target):
        counts[d.action] = counts.get(d.action, 0) + 1
        if d.action in (INSERT, UPDATE):
            key = d.target_key or f"t{d.source_key}"
            target[key] = dict(d.values)
            d.target_key = key
        if d.action in (INSERT, UPDATE, UNCHANGED):
            couplings[d.source_key] = CouplingState(
                id=int(d.source_key), source_key=d.source_key, target_key=d.target_key, state="synced",
                source_hash=d.source_hash, target_hash=d.target_hash, last_result="success")
    return counts


@settings(max_examples=150, deadline=None)
@given(first=rows_strategy, edits=st.lists(st.tuples(st.integers(0, 11), names, countries), max_size=10))
def test_any_edits_followed_by_runs_converge(first: list[dict[str, Any]], edits: list[tuple[int, Any, Any]]) -> None:
    source = {str(i + 1): {"id": i + 1, **r} for i, r in enumerate(first)}
    couplings: dict[str, CouplingState] = {}
    target: dict[str, dict[str, Any]] = {}
    simulate(list(source.values()), couplings, target)
    for index, name, country in edits:
        key = str(index % len(source) + 1)
        source[key] = {**source[key], "name": name, "country": country}
    simulate(list(source.values()), couplings, target)
    # Converged: the target holds exactly the mapped source values, and a further run changes nothing.
    for key, row in source.items():
        expected = {"name": row["name"], "country_code": row["country"].upper() if row["country"] else None,
                    "customertypecode": 3}
        assert target[couplings[key].target_key] == expected
    again = simulate(list(source.values()), couplings, target)
    assert set(again) == {UNCHANGED}
    assert len(target) == len(source)


def test_uncoupled_tombstone_is_ignored() -> None:
    tomb = CouplingState(id=1, source_key="1", target_key=None, state="uncoupled", source_hash=None, target_hash=None,
                         last_result="success")
    [d] = decide(PLAN, [{"id": 1, "name": "Ann", "country": "dk"}], {"1": tomb}, {})
    assert d.action == IGNORE
