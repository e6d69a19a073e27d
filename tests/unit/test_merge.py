"""The three-way field merge of bidirectional mappings, and its convergence under any edits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tablesync.apps.values import canonical
from tablesync.config.model import MappingSpec
from tablesync.config.transforms import register_transform
from tablesync.store.couplings import CouplingState
from tablesync.sync.decide import FAIL, SKIP, UNCHANGED, UPDATE
from tablesync.sync.merge import CONFLICT, PairDecision, merge, side_hash
from tablesync.sync.plan import PairPlan, compile_plan, pair_plan

FIELDS = [
    {"local": "name", "integration": "name"},
    {"local": "city", "integration": "address1_city"},
    {"local": "phone", "integration": "telephone1"},
    {"local": "email", "integration": "emailaddress1", "direction": "to_integration", "transform": "lower"},
    {"local": "rating", "integration": "rating", "direction": "from_integration"},
    {"integration": "customertypecode", "constant": 3, "direction": "to_integration"},
]


def plan(strategy: str = "skip", fields: list[dict[str, Any]] | None = None) -> PairPlan:
    spec = MappingSpec.model_validate({
        "name": "CUSTOMER", "direction": "bidirectional", "on_update_conflict": strategy,
        "local": {"app": "erp", "table": "customers", "key": "id", "modified": "modified_at"},
        "integration": {"app": "crm", "table": "accounts", "key": "account_id", "modified": "modifiedon"},
        "fields": fields or FIELDS,
    })
    return pair_plan(spec, compile_plan(spec, "to_integration"), compile_plan(spec, "from_integration"))


def synced(p: PairPlan, local: dict[str, Any], integration: dict[str, Any]) -> CouplingState:
    """The coupling as a clean sync of these two records leaves it."""
    snap_l = {c: canonical(local.get(c)) for c in p.local_columns}
    snap_i = {c: canonical(integration.get(c)) for c in p.integration_columns}
    return CouplingState(id=1, source_key="1", target_key="A", state="synced",
                         source_hash=side_hash(snap_l, p.local_columns), target_hash=side_hash(snap_i, p.integration_columns),
                         last_result="success", snapshot={"local": snap_l, "integration": snap_i})


LOCAL = {"id": 1, "name": "Ann", "city": "Oslo", "phone": "1", "email": "ann@x.org", "rating": "A"}
INTEG = {"account_id": "A", "name": "Ann", "address1_city": "Oslo", "telephone1": "1", "emailaddress1": "ann@x.org",
         "rating": "A", "customertypecode": 3}


def test_untouched_pair_is_unchanged_by_hash_alone() -> None:
    p = plan()
    d = merge(p, synced(p, LOCAL, INTEG), LOCAL, INTEG)
    assert d.action == UNCHANGED and not d.to_local and not d.to_integration


def test_different_fields_changed_on_each_side_merge_both_ways() -> None:
    p = plan()
    c = synced(p, LOCAL, INTEG)
    d = merge(p, c, {**LOCAL, "city": "Bergen"}, {**INTEG, "telephone1": "2"})
    assert d.action == UPDATE
    assert d.to_integration == {"address1_city": "Bergen"}
    assert d.to_local == {"phone": "2"}
    assert d.changes_local == {"phone": ["1", "2"]} and d.changes_integration == {"address1_city": ["Oslo", "Bergen"]}


def test_same_field_changed_to_the_same_value_is_no_conflict() -> None:
    p = plan()
    d = merge(p, synced(p, LOCAL, INTEG), {**LOCAL, "city": "Bergen"}, {**INTEG, "address1_city": "Bergen"})
    assert d.action == UNCHANGED and not d.conflicts
    assert d.snapshot is not None and d.snapshot["local"]["city"] == "Bergen"  # the new common value is remembered


def test_conflict_with_skip_names_fields_and_values_and_still_merges_the_rest() -> None:
    p = plan("skip")
    d = merge(p, synced(p, LOCAL, INTEG), {**LOCAL, "city": "Bergen", "name": "Ann B"}, {**INTEG, "address1_city": "Trondheim"})
    assert d.action == CONFLICT
    assert "city: local 'Bergen' ≠ integration address1_city 'Trondheim'" in d.conflict_message()
    assert d.to_integration == {"name": "Ann B"} and d.to_local == {}
    assert d.snapshot is not None and d.snapshot["local"]["city"] == "Oslo"  # kept, so a retry sees the conflict again


@pytest.mark.parametrize(("strategy", "local_mod", "integ_mod", "winner"), [
    ("local_wins", "2026-01-01T10:00:00", "2026-01-01T11:00:00", "local"),
    ("integration_wins", "2026-01-01T12:00:00", "2026-01-01T11:00:00", "integration"),
    ("newest_wins", "2026-01-01T12:00:00+00:00", "2026-01-01T13:30:00+02:00", "local"),  # 12:00Z is after 11:30Z
    ("newest_wins", "2026-01-01T10:00:00", "2026-01-01T11:00:00", "integration"),
])
def test_strategies_settle_conflicting_fields_and_merge_the_others(strategy: str, local_mod: str, integ_mod: str, winner: str) -> None:
    p = plan(strategy)
    local = {**LOCAL, "city": "Bergen", "modified_at": local_mod}
    integ = {**INTEG, "address1_city": "Trondheim", "telephone1": "2", "modifiedon": integ_mod}
    d = merge(p, synced(p, LOCAL, INTEG), local, integ)
    assert d.action == UPDATE and d.resolved_by == winner
    if winner == "local":
        assert d.to_integration == {"address1_city": "Bergen"} and d.to_local == {"phone": "2"}
    else:
        assert d.to_local == {"city": "Trondheim", "phone": "2"} and d.to_integration == {}


def test_newest_wins_with_equal_modified_on_is_left_as_a_conflict() -> None:
    p = plan("newest_wins")
    t = "2026-01-01T10:00:00"
    d = merge(p, synced(p, LOCAL, INTEG), {**LOCAL, "city": "B", "modified_at": t}, {**INTEG, "address1_city": "T", "modifiedon": t})
    assert d.action == CONFLICT


def test_one_way_fields_flow_only_their_way_and_only_when_their_source_changed() -> None:
    p = plan()
    c = synced(p, LOCAL, INTEG)
    # The CRM edited a field the ERP owns: left alone until the ERP changes it.
    d = merge(p, c, LOCAL, {**INTEG, "emailaddress1": "crm@x.org"})
    assert d.to_local == {} and d.to_integration == {}
    d = merge(p, c, {**LOCAL, "email": "New@X.org", "rating": "Z"}, {**INTEG, "rating": "B"})
    assert d.to_integration == {"emailaddress1": "new@x.org"}  # transformed, one way
    assert d.to_local == {"rating": "B"}  # the CRM owns rating: the ERP's own edit is overwritten


def test_constant_is_enforced_when_the_record_is_looked_at() -> None:
    p = plan()
    d = merge(p, synced(p, LOCAL, {**INTEG, "customertypecode": 9}), {**LOCAL, "name": "Ann B"}, {**INTEG, "customertypecode": 9})
    assert d.to_integration == {"name": "Ann B", "customertypecode": 3}


def test_no_snapshot_counts_a_moved_side_as_changed_everywhere() -> None:
    p = plan()
    c = replace(synced(p, LOCAL, INTEG), snapshot=None)
    d = merge(p, c, {**LOCAL, "city": "Bergen"}, INTEG)
    assert d.to_integration == {"address1_city": "Bergen"}
    d = merge(p, replace(c, source_hash=None, target_hash=None), {**LOCAL, "city": "Bergen"}, INTEG)
    assert d.action == CONFLICT  # nothing known: a difference cannot be attributed to either side


def test_skipped_pair_is_not_looked_at_and_bad_value_fails_alone() -> None:
    p = plan()
    assert merge(p, replace(synced(p, LOCAL, INTEG), skipped=True), {**LOCAL, "city": "X"}, INTEG).action == SKIP

    @register_transform("digits_only")
    def digits_only(value: Any) -> int:
        return int(value)

    bad = plan(fields=[{"local": "name", "integration": "name"},
                       {"local": "code", "integration": "code", "direction": "to_integration", "transform": "digits_only"}])
    d = merge(bad, synced(bad, {"name": "a"}, {"name": "a"}), {"name": "b", "code": "x1"}, {"name": "a"})
    assert d.action == FAIL and "code" in (d.message or "")


# -- convergence -----------------------------------------------------------------------------------

SIMPLE = [{"local": "name", "integration": "name"}, {"local": "city", "integration": "city"},
          {"local": "phone", "integration": "phone"}]
COLUMNS = ("name", "city", "phone")
values = st.sampled_from(["a", "b", "c", None])
edit = st.tuples(st.integers(0, 3), st.sampled_from(["local", "integration"]), st.sampled_from(COLUMNS), values)


class World:
    """Two apps with four coupled records, synced by running `merge` the way the engine applies it."""

    def __init__(self, strategy: str, fields: list[dict[str, Any]] | None = None) -> None:
        self.plan = plan(strategy, fields or SIMPLE)
        base = {"name": "n", "city": "c", "phone": "p"}
        self.sides = {"local": [dict(base) for _ in range(4)], "integration": [dict(base) for _ in range(4)]}
        self.couplings = [replace(synced(self.plan, base, base), id=i) for i in range(4)]

    def run(self) -> int:
        """One sync run; returns how many records it wrote."""
        writes = 0
        for i, c in enumerate(self.couplings):
            local, integ = self.sides["local"][i], self.sides["integration"][i]
            before = (dict(local), dict(integ))
            d = merge(self.plan, c, local, integ)
            if d.action == SKIP:
                assert (local, integ) == before
                continue
            local.update(d.to_local)
            integ.update(d.to_integration)
            writes += bool(d.to_local) + bool(d.to_integration)
            self.couplings[i] = self._after(c, d)
        return writes

    @staticmethod
    def _after(c: CouplingState, d: PairDecision) -> CouplingState:
        if d.action == UNCHANGED and d.snapshot is None:
            return c
        return replace(c, source_hash=d.local_hash, target_hash=d.integration_hash, snapshot=d.snapshot,
                       last_result="success", skipped=d.action == CONFLICT)


@settings(max_examples=300, deadline=None)
@given(strategy=st.sampled_from(["skip", "local_wins", "integration_wins"]),
       rounds=st.lists(st.lists(edit, max_size=6), min_size=1, max_size=4))
def test_any_interleaving_of_edits_converges_except_reported_conflicts(strategy: str, rounds: list[list[tuple[int, str, str, Any]]]) -> None:
    world = World(strategy)
    for edits in rounds:  # edits land on both sides between runs; skipped records are never written
        for i, side, column, value in edits:
            world.sides[side][i][column] = value
        world.run()
    world.run()
    assert world.run() == 0  # no ping-pong: a run without edits writes nothing
    for i, c in enumerate(world.couplings):
        if not c.skipped:
            assert world.sides["local"][i] == world.sides["integration"][i]
    if strategy != "skip":
        assert not any(c.skipped for c in world.couplings)


# -- a transform on a two-way field (transform_direction) -------------------------------------------

@pytest.mark.parametrize("way", [None, "to_integration", "from_integration"])
def test_two_way_transform_applies_in_its_direction_and_copies_the_other_way_as_is(way: str | None) -> None:
    field = {"local": "city", "integration": "city", "transform": "upper", **({"transform_direction": way} if way else {})}
    p = plan("skip", [{"local": "name", "integration": "name"}, field])
    base = {"name": "n", "city": "OSLO"}
    c = synced(p, base, base)
    to_integration = merge(p, c, {**base, "city": "bergen"}, base)
    from_integration = merge(p, c, base, {**base, "city": "bergen"})
    if way in (None, "to_integration"):  # the default, as the reference product's Transformation Direction
        assert to_integration.to_integration == {"city": "BERGEN"} and from_integration.to_local == {"city": "bergen"}
    else:
        assert to_integration.to_integration == {"city": "bergen"} and from_integration.to_local == {"city": "BERGEN"}
    # the pair as the write left it is in agreement: a change of another field writes only that field
    left_l, left_i = {**base, "city": "bergen"}, {**base, "city": "BERGEN"}
    if way == "from_integration":
        left_l, left_i = left_i, left_l
    after = merge(p, synced(p, left_l, left_i), {**left_l, "name": "m"}, left_i)
    assert after.to_integration == {"name": "m"} and after.to_local == {} and after.action == UPDATE


cities = st.sampled_from(["oslo", "OSLO", "Oslo", "bergen", None])
city_edit = st.tuples(st.integers(0, 3), st.sampled_from(["local", "integration"]), st.sampled_from(["name", "city"]), cities)


@settings(max_examples=300, deadline=None)
@given(way=st.sampled_from(["to_integration", "from_integration"]),
       rounds=st.lists(st.lists(city_edit, max_size=6), min_size=1, max_size=4))
def test_two_way_transform_converges_without_ping_pong(way: str, rounds: list[list[tuple[int, str, str, Any]]]) -> None:
    fields = [{"local": "name", "integration": "name"},
              {"local": "city", "integration": "city", "transform": "upper", "transform_direction": way}]
    world = World("local_wins", fields)
    for edits in rounds:
        for i, side, column, value in edits:
            world.sides[side][i][column] = value
        world.run()
    world.run()
    assert world.run() == 0  # no ping-pong, though the two sides hold different spellings
    up = lambda v: v.upper() if isinstance(v, str) else v  # noqa: E731
    for i in range(4):
        local, integ = world.sides["local"][i], world.sides["integration"][i]
        assert local["name"] == integ["name"]
        source, target = (local, integ) if way == "to_integration" else (integ, local)
        assert target["city"] in (source["city"], up(source["city"]))  # copied as is one way, transformed the other
