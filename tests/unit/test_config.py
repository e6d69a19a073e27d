"""Config validation without databases: every problem names its mapping and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tablesync.config.load import expand_env, load_config, parse_config
from tablesync.config.model import dependency_order
from tablesync.errors import ConfigError

BASE: dict[str, Any] = {
    "apps": {"erp": {"url": "${ERP_DATABASE_URL}"}, "crm": {"url": "sqlite:///crm.db"}},
    "mappings": [{
        "name": "CUSTOMER",
        "local": {"app": "erp", "table": "customers", "key": "id", "modified": "modified_at"},
        "integration": {"app": "crm", "table": "accounts", "key": "account_id", "modified": "modifiedon"},
        "direction": "to_integration",
        "schedule": "every 30s",
        "fields": [
            {"local": "name", "integration": "name"},
            {"local": "email", "integration": "emailaddress1"},
        ],
    }],
}


def problems(mutate: Any) -> list[str]:
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "tablesync.yaml")
    return [str(p) for p in info.value.problems]


def m0(data: dict[str, Any]) -> dict[str, Any]:
    return data["mappings"][0]


def test_valid_config_parses() -> None:
    cfg = parse_config(copy.deepcopy(BASE), "tablesync.yaml")
    assert cfg.mappings[0].parsed_schedule().interval == 30


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: m0(d).update(direction="sideways"),
     "mapping CUSTOMER, direction: 'sideways' is not allowed: use 'to_integration', 'from_integration' or 'bidirectional'"),
    (lambda d: m0(d).update(schedule="sometimes"),
     "mapping CUSTOMER, schedule: schedule 'sometimes' is neither an interval"),
    (lambda d: m0(d).update(colour="blue"), "mapping CUSTOMER, colour: unknown setting 'colour' (check its spelling)"),
    (lambda d: m0(d).pop("local"), "mapping CUSTOMER, local: is required"),
    (lambda d: m0(d)["fields"][1].update(direction="up"),
     "mapping CUSTOMER, field #2 (email ↔ emailaddress1), direction: 'up' is not allowed: use"),
    (lambda d: m0(d).update(fields=[]), "mapping CUSTOMER, fields: List should have at least 1 item"),
    (lambda d: m0(d)["local"].update(app="sap"), "mapping CUSTOMER, local: unknown app 'sap'; apps: erp, crm"),
    (lambda d: d["mappings"].append(copy.deepcopy(m0(d))), "mapping CUSTOMER: the name is used by more than one mapping"),
    (lambda d: m0(d)["fields"][1].update(direction="from_integration"),
     "mapping CUSTOMER, field #2 (email ↔ emailaddress1): direction from_integration contradicts the mapping direction to_integration"),
    (lambda d: m0(d)["fields"].append({"local": "x", "integration": "y", "constant": 1}),
     "mapping CUSTOMER, field #3 (constant → integration y): a constant names exactly one side"),
    (lambda d: m0(d)["fields"].append({"local": "kind", "constant": 1}),
     "mapping CUSTOMER, field #3 (constant → local kind): a constant is written to the local side, so its direction must be from_integration"),
    (lambda d: m0(d)["fields"].append({"local": "phone"}),
     "mapping CUSTOMER, field #3 (phone ↔ None): a field needs both `local:` and `integration:`"),
    (lambda d: m0(d)["fields"][0].update(transform="shout"), "mapping CUSTOMER, field #1 (name ↔ name): unknown transform 'shout'; known:"),
    (lambda d: m0(d)["fields"][0].update(transform="upper", transform_direction="from_integration"),
     "mapping CUSTOMER, field #1 (name ↔ name): transform_direction 'from_integration' contradicts the field's direction"),
    (lambda d: (m0(d).update(direction="bidirectional"), m0(d)["fields"][0].update(transform_direction="to_integration")),
     "mapping CUSTOMER, field #1 (name ↔ name): transform_direction 'to_integration' is given without a transform"),
    (lambda d: (m0(d).update(direction="bidirectional"), m0(d)["fields"][0].update(transform="upper", transform_direction="both")),
     "mapping CUSTOMER, field #1 (name ↔ name), transform_direction: 'both' is not allowed: use 'to_integration' or"),
    (lambda d: m0(d)["fields"].append({"local": "mail", "integration": "emailaddress1"}),
     "mapping CUSTOMER, field #3 (mail ↔ emailaddress1): integration column 'emailaddress1' is already written by field #2"),
    (lambda d: m0(d).update(fields=[{"integration": "code", "constant": 3}]),
     "mapping CUSTOMER: no field carries data to integration"),
    (lambda d: m0(d).update(match_on=["phone"]), "mapping CUSTOMER, match_on: 'phone' is not a mapped local field"),
    (lambda d: m0(d).update(depends_on=["ITEM"]), "mapping CUSTOMER, depends_on: unknown mapping 'ITEM'"),
    (lambda d: m0(d).update(depends_on=["CUSTOMER"]), "mapping CUSTOMER, depends_on: a mapping cannot depend on itself"),
    (lambda d: d["apps"]["crm"].update(url="postgresql://sync:hunter2@db/crm"),
     "app crm, url: holds a literal password; tablesync never stores secrets"),
    (lambda d: m0(d).update(name="has space"), "mapping has space, name: String should match pattern '^[A-Za-z0-9_.-]+$' (got 'has space')"),
    (lambda d: m0(d).update(skip_after_failures=0),
     "mapping CUSTOMER, skip_after_failures: Input should be greater than or equal to 1 (got 0)"),
    (lambda d: m0(d)["fields"].append({"local": "parent_id", "integration": "parentid", "parent": "CUSTOMER"}),
     "mapping CUSTOMER, field #3 (parent_id ↔ parentid): parent 'CUSTOMER' must also be listed in depends_on"),
    (lambda d: (m0(d).update(on_update_conflict="newest_wins"), m0(d)["integration"].pop("modified")),
     "mapping CUSTOMER, on_update_conflict: newest_wins compares modified-on values"),
    (lambda d: m0(d)["local"].update(key=[]), "mapping CUSTOMER, local, key: a composite key names at least one column"),
    (lambda d: m0(d)["local"].update(key=["a", "b", "a"]), "mapping CUSTOMER, local, key: the key names 'a' more than once (got ['a', 'b', 'a'])"),
    (lambda d: m0(d)["fields"][0].update(local=["first", "last"]),
     "mapping CUSTOMER, field #1 ([first, last] ↔ name): a list of columns (local: ['first', 'last']) is for a parent field"),
    (lambda d: (m0(d).update(depends_on=["CUSTOMER"]), d["mappings"].append({**copy.deepcopy(m0(d)), "name": "LINE",
               "depends_on": ["CUSTOMER"], "fields": [{"local": ["doc", "no"], "integration": "order_id", "parent": "CUSTOMER"}]})),
     "mapping LINE, field #1 ([doc, no] ↔ order_id): the local key of CUSTOMER is id (1 column(s)), so the field gives 1 local "
     "column(s), in that order; it gives 2"),
])
def test_each_problem_is_located_and_explained(mutate: Any, expected: str) -> None:
    found = problems(mutate)
    assert any(p.startswith(expected) for p in found), found


def test_dependency_cycle_is_reported_with_its_path() -> None:
    def mutate(d: dict[str, Any]) -> None:
        a = m0(d)
        b = copy.deepcopy(a)
        b.update(name="CONTACT", depends_on=["CUSTOMER"])
        b["local"]["table"] = "contacts"
        a["depends_on"] = ["CONTACT"]
        d["mappings"].append(b)

    found = problems(mutate)
    assert any("dependency cycle: CUSTOMER → CONTACT → CUSTOMER" in p for p in found), found


def test_all_problems_are_reported_together() -> None:
    found = problems(lambda d: (m0(d).update(schedule="bad"), m0(d)["local"].update(app="sap")))
    assert len(found) >= 1
    found = problems(lambda d: (m0(d)["local"].update(app="sap"), m0(d).update(match_on=["zzz"])))
    assert len(found) == 2


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "tablesync.yaml"
    path.write_text("apps:\n  erp: {url: x\nmappings: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value.problems[0]) == "line 3, column 9: not valid YAML: expected ',' or '}', but got ':'"


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "not found (set TABLESYNC_CONFIG or pass --config)" in info.value.report()


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(["apps"], "f.yaml")
    assert str(info.value.problems[0]) == "top level: expected a mapping with `apps:` and `mappings:`"


def test_env_expansion_and_missing_variable() -> None:
    assert expand_env("postgresql://u@${HOST}/db", "app erp, url", {"HOST": "db1"}) == "postgresql://u@db1/db"
    assert expand_env("${PORT:-5432}", "x", {}) == "5432"
    with pytest.raises(ConfigError) as info:
        expand_env("${ERP_DATABASE_URL}", "app erp, url", {})
    assert str(info.value.problems[0]) == "app erp, url: environment variable ERP_DATABASE_URL is not set"


def test_dependency_order_puts_parents_first() -> None:
    data = copy.deepcopy(BASE)
    child = copy.deepcopy(m0(data))
    child.update(name="CONTACT", depends_on=["CUSTOMER"])
    child["local"]["table"] = "contacts"
    data["mappings"].insert(0, child)
    cfg = parse_config(data, "f.yaml")
    assert [m.name for m in dependency_order(cfg.mappings)] == ["CUSTOMER", "CONTACT"]


def test_durations_parse_and_bad_ones_say_how_to_write_them() -> None:
    from datetime import timedelta

    from tablesync.config.schedule import parse_duration

    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("90 min") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    with pytest.raises(ValueError, match="e.g. 30d"):
        parse_duration("a month")


BAD = "bogus-Value 7"


@pytest.mark.parametrize("path, value", [
    (("direction",), BAD), (("on_update_conflict",), BAD), (("on_deletion_conflict",), BAD), (("schedule",), BAD),
    (("schedule",), "every 0s"), (("deletion_scan",), BAD), (("skip_after_failures",), BAD), (("skip_after_failures",), -5),
    (("batch_size",), 0), (("batch_size",), BAD), (("name",), "bad name!"), (("sync_only_coupled",), BAD),
    (("match_on",), BAD), (("match_on",), [BAD]), (("depends_on",), BAD), (("depends_on",), [BAD]), (("fields",), BAD),
    (("local",), BAD), (("local", "app"), BAD), (("local", "key"), 12.5), (("fields", 0, "direction"), BAD),
    (("fields", 0, "transform"), BAD), (("fields", 0, "transform_direction"), BAD), (("fields", 0, "parent"), BAD),
    (("fields", 0, "local"), ["a", "b"]), (("colour",), "blue"),
])
def test_every_invalid_value_is_quoted_in_its_error(path: tuple[Any, ...], value: Any) -> None:
    def mutate(d: dict[str, Any]) -> None:
        node = m0(d)
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    found = problems(mutate)
    shown = [repr(v) for v in (value if isinstance(value, list) else [value])] + ([repr(path[-1])] if path == ("colour",) else [])
    assert any(any(s in p for s in shown) for p in found), found


def test_spec_example_is_valid_and_its_two_way_transform_goes_to_integration() -> None:
    from tablesync.sync.plan import compile_plan

    cfg = load_config(Path(__file__).resolve().parents[1] / "data" / "spec_example.yaml")
    spec = cfg.mappings[0]
    rules = {d: {r.target: r for r in compile_plan(spec, d).rules} for d in spec.directions()}
    assert rules["to_integration"]["country_code"].transform_name == "upper"
    assert rules["from_integration"]["country"].transform is None  # copied as it is
