"""The OData v4 connector (`apps.odata`) against a real OData service (SAP CAP, `odata_crm`):
its metadata, changes read by modified-on across server-driven pages, key lookups, and writes whose
results say, per record, ok, conflict (a stale ETag: HTTP 412) or error (the service's message)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from decimal import Decimal

import pytest
import redis

from tablesync.apps.connector import KeyRange, Outcome, Update
from tablesync.apps.odata import ODataService, shared_rate
from tablesync.errors import AppError, AppUnavailable
from tests.integration.odata_server import ODataCrm, Relay, odata_crm  # noqa: F401  (the fixture)

REDIS = "redis://127.0.0.1:6379/0"
COLUMNS = ["accountnumber", "name", "emailaddress1", "creditlimit"]


def accounts(crm: ODataCrm):  # type: ignore[no-untyped-def]
    return ODataService(crm.url, label="app crm").table("Accounts", modified="modifiedAt", batch_size=7)


def test_metadata_names_sets_keys_types_and_versions(odata_crm: ODataCrm) -> None:  # noqa: F811
    service = ODataService(odata_crm.url)
    meta = service.metadata()
    assert set(meta.entity_sets) == {"Accounts", "Contacts"}
    acc = meta.entity_set("Accounts")
    assert acc.key == ("ID",) and acc.versioned
    assert acc.property("ID").edm_type == "Edm.Guid"
    name = acc.property("name")
    assert (name.edm_type, name.nullable, name.max_length) == ("Edm.String", False, 100)
    limit = acc.property("creditlimit")
    assert (limit.edm_type, limit.precision, limit.scale) == ("Edm.Decimal", 12, 2)
    assert acc.property("modifiedAt").edm_type == "Edm.DateTimeOffset"
    with pytest.raises(AppError, match="no entity set 'Acounts'; it has: Accounts, Contacts"):
        meta.entity_set("Acounts")
    with pytest.raises(AppError, match="Accounts has no property 'modifiedon'"):
        service.table("Accounts", modified="modifiedon")


def test_inserts_are_read_back_as_changes_page_by_page_and_by_key(odata_crm: ODataCrm) -> None:  # noqa: F811
    table = accounts(odata_crm)
    rows = [{"accountnumber": f"C{i:03}", "name": f"Customer {i}", "creditlimit": Decimal("1234567890.25") + i}
            for i in range(25)]
    results = table.insert(rows)
    assert [r.outcome for r in results] == [Outcome.OK] * 25 and all(r.version for r in results)
    keys = [str(r.key) for r in results]
    pages = list(table.read_changes(COLUMNS, None))
    records = [r for p in pages for r in p.records]
    assert [r.values["accountnumber"] for r in records] == [f"C{i:03}" for i in range(25)]  # by modified, then key
    assert records[3].values["creditlimit"] == Decimal("1234567893.25")  # no digit lost to a float
    mark = pages[-1].watermark
    assert isinstance(mark, dt.datetime) and mark.tzinfo is not None
    found = table.read_by_keys([keys[5], keys[20], "00000000-0000-0000-0000-000000000000"], COLUMNS)
    assert set(found) == {keys[5], keys[20]} and found[keys[20]].values["name"] == "Customer 20"
    listed = [k for page in table.list_keys(KeyRange()) for k in page]
    assert sorted(listed) == sorted(keys)

    # What changed since the watermark: only the record updated after it.
    later = table.update([Update(keys[7], {"name": "Renamed"}, found.get(keys[7], table.read_by_keys([keys[7]], COLUMNS)[keys[7]]).version)])
    assert later[0].ok
    changed = [r for p in table.read_changes(COLUMNS, mark + dt.timedelta(microseconds=1000)) for r in p.records]
    assert [r.key for r in changed] == [keys[7]] and changed[0].values["name"] == "Renamed"


def test_a_stale_version_is_a_conflict_and_a_refused_record_fails_alone(odata_crm: ODataCrm) -> None:  # noqa: F811
    table = accounts(odata_crm)
    made = table.insert([{"accountnumber": "A1", "name": "Ada"}, {"accountnumber": "NONAME"}, {"accountnumber": "B1", "name": "Bo"}])
    assert [r.outcome for r in made] == [Outcome.OK, Outcome.ERROR, Outcome.OK]
    assert "name" in str(made[1].message)  # the service's own message: a NOT NULL constraint on name
    ada = str(made[0].key)
    read = table.read_by_keys([ada], COLUMNS)[ada]
    # someone else changes the record after it was read: the write made on the old version conflicts
    assert table.update([Update(ada, {"emailaddress1": "ada@example.com"}, read.version)])[0].ok
    stale = table.update([Update(ada, {"name": "Ada Lovelace"}, read.version)])
    assert stale[0].outcome is Outcome.CONFLICT and stale[0].status == 412
    assert table.read_by_keys([ada], COLUMNS)[ada].values["name"] == "Ada"
    gone = table.delete([ada, ada])  # deleting what is already gone is done, not an error
    assert [r.outcome for r in gone] == [Outcome.OK, Outcome.OK], gone
    assert ada not in table.read_by_keys([ada], COLUMNS)


def test_a_stopped_service_is_unavailable_not_a_record_error(odata_crm: ODataCrm) -> None:  # noqa: F811
    table = accounts(odata_crm)
    odata_crm.stop()
    with pytest.raises(AppUnavailable, match="app crm at http://127.0.0.1"):
        table.insert([{"name": "lost"}])
    secret = ODataService(odata_crm.url.replace("http://", "http://crm:s3cret@"), label="app crm")
    with pytest.raises(AppUnavailable) as caught:
        secret.metadata()
    assert "s3cret" not in str(caught.value) and "crm:***@" in str(caught.value)
    with pytest.raises(AppUnavailable):
        list(table.read_changes(COLUMNS, None))


def test_a_throttled_service_is_waited_for_as_it_asks(odata_crm: ODataCrm) -> None:  # noqa: F811
    proxy = Relay(odata_crm.url, refusals=2)
    try:
        service = ODataService(proxy.url, label="app crm", metadata=ODataService(odata_crm.url).metadata())  # the insert meets the refusals
        table = service.table("Accounts", modified="modifiedAt")
        started = time.monotonic()
        made = table.insert([{"name": "patient"}])
        assert made[0].ok, made
        assert [status for _, status in proxy.seen] == [429, 429, 201]
        gaps = [b - a for (a, _), (b, _) in zip(proxy.seen, proxy.seen[1:])]
        assert all(g >= 0.9 for g in gaps), gaps  # Retry-After: 1, honoured between the three attempts
        assert time.monotonic() - started >= 1.9
    finally:
        proxy.close()


def test_a_service_throttled_beyond_the_budget_is_unavailable_and_no_record_fails(odata_crm: ODataCrm) -> None:  # noqa: F811
    proxy = Relay(odata_crm.url, refusals=1000)
    try:
        service = ODataService(proxy.url, label="app crm", throttle_seconds=2.5, metadata=ODataService(odata_crm.url).metadata())
        table = service.table("Accounts", modified="modifiedAt")
        with pytest.raises(AppUnavailable, match=r"throttled \(HTTP 429\) for 2.5 s; the job resumes later"):
            table.insert([{"name": "later"}])
        assert 3 <= len(proxy.seen) <= 5  # waited as asked, within the budget, then gave up
    finally:
        proxy.close()
    assert ODataService(odata_crm.url).table("Accounts").read_by_keys([], COLUMNS) == {}


def test_two_workers_sharing_a_rate_through_redis_stay_under_it(odata_crm: ODataCrm) -> None:  # noqa: F811
    """Two workers (each its own client, limiter and Redis connection) read the same service at
    a shared 4 requests a second; the proxy's clock says they kept to it together."""
    proxy = Relay(odata_crm.url, refusals=0)
    app = f"crm-{uuid.uuid4().hex[:8]}"
    metadata = ODataService(odata_crm.url).metadata()
    errors: list[BaseException] = []

    def worker(limited: bool) -> None:
        try:
            service = ODataService(proxy.url, label="app crm", limiter=shared_rate(REDIS, app, 4) if limited else None,
                                   metadata=metadata)
            table = service.table("Accounts")
            for _ in range(8):
                table.read_by_keys(["00000000-0000-0000-0000-000000000000"], COLUMNS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def two_workers(limited: bool) -> list[float]:
        proxy.seen.clear()
        threads = [threading.Thread(target=worker, args=(limited,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        return sorted(t for t, _ in proxy.seen)

    try:
        free = two_workers(limited=False)  # the control: without the limiter, the same load is quick
        times = two_workers(limited=True)
        assert len(free) == len(times) == 16
        # 16 requests, 4 at once and then 4 more each second: three seconds at least
        assert times[-1] - times[0] >= 2.9 > free[-1] - free[0]
        # The limiter spaces acquisitions; requests reach the proxy a little later, each with its
        # own delay on a busy machine: 0.2 s of that jitter is allowed.
        busiest = max(sum(1 for u in times if t <= u < t + 0.8) for t in times)
        assert busiest <= 4, busiest
    finally:
        proxy.close()
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(f"tablesync:rate:{app}*"):
            client.delete(key)


def test_writes_go_as_batches_and_one_by_one_where_the_service_has_no_batch(odata_crm: ODataCrm) -> None:  # noqa: F811
    proxy = Relay(odata_crm.url)
    try:
        metadata = ODataService(odata_crm.url).metadata()
        batched = ODataService(proxy.url, label="app crm", metadata=metadata, batch_size=4).table("Accounts", modified="modifiedAt")
        made = batched.insert([{"accountnumber": f"B{i}", "name": f"Batched {i}"} for i in range(10)] + [{"accountnumber": "BAD"}])
        assert [r.outcome for r in made] == [Outcome.OK] * 10 + [Outcome.ERROR] and "name" in str(made[-1].message)
        assert proxy.methods == ["POST"] * 3  # 11 records: three $batch requests of up to 4
        keys = [str(r.key) for r in made[:10]]
        versions = {k: r.version for k, r in batched.read_by_keys(keys, COLUMNS).items()}
        updated = batched.update([Update(k, {"name": "Renamed"}, versions[k]) for k in keys[:3]] + [Update(keys[3], {"name": "x"}, 'W/"stale"')])
        assert [r.outcome for r in updated] == [Outcome.OK] * 3 + [Outcome.CONFLICT]

        proxy.no_batch, proxy.methods[:] = True, []
        plain = ODataService(proxy.url, label="app crm", metadata=metadata).table("Accounts", modified="modifiedAt")
        gone = plain.delete(keys[:5])
        assert all(r.ok for r in gone) and proxy.methods == ["POST"] + ["DELETE"] * 5  # refused once, then one by one
        assert set(plain.read_by_keys(keys, COLUMNS)) == set(keys[5:])
    finally:
        proxy.close()
