"""The web console under a big errors list: N skipped couplings (default 5,000) of a one-way
PostgreSQL mapping, each with its error, both apps asked live whether every record exists.

Times, medians of several requests, against a baseline measured in the same run: reading the
same errors without HTTP (`console.views.error_objects`, the store query plus the live existence
checks, which `tablesync errors` also does):

- GET /api/errors (every error, as JSON, with allowed actions);
- GET /errors (the page: the first 500 rows rendered, Retry all over all of them);
- GET /errors?view=groups (every error read, rendered as groups);
- GET /jobs (a page of 50 of N jobs, with the total).

    python benchmarks/console_bench.py [--errors 5000] [--runs 5]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379 (actions
are not sent; the broker is only built). Creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import sqlalchemy as sa
from record_events import CONFIG, create_apps, databases

N_JOBS_EXTRA = 2000


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--errors", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from tablesync.config.model import ConfigFile
    from tablesync.config.settings import load_settings
    from tablesync.console import views
    from tablesync.console.web.app import create_app
    from tablesync.console.web.auth import hash_password
    from tablesync.store.jobs import create_job, create_jobs
    from tablesync.store.mappings import apply_config, get_mapping
    from tablesync.store.migrate import upgrade
    from tablesync.sync.run import sync_mapping
    from tablesync.worker.broker import build_broker

    n = args.errors
    with databases("erp", "crm", "store") as urls:
        erp, crm, store = (sa.create_engine(urls[k]) for k in ("erp", "crm", "store"))
        create_apps(erp, crm, n)
        upgrade(store)
        apply_config(store, ConfigFile.model_validate({"apps": {"erp": {"url": urls["erp"]}, "crm": {"url": urls["crm"]}},
                                                       "mappings": [CONFIG]}))
        settings = load_settings(store_url=urls["store"], broker_url="redis://127.0.0.1:6379/0",
                                 broker_namespace="tablesync-console-bench", web_users={"bench": hash_password("bench")},
                                 web_secret_key="bench")
        with store.begin() as conn:
            stored = get_mapping(conn, "CUSTOMER")
            job_id = create_job(conn, "CUSTOMER", "sync")
        assert stored is not None and sync_mapping(store, settings, stored, job_id).inserted == n
        with store.begin() as conn:  # every record an update conflict with its own values: one error group
            conn.execute(sa.text(
                "INSERT INTO job_errors (job_id, coupling_id, direction, source_key, destination_key, message, created_at) "
                "SELECT :job, id, 'to_integration', local_key, integration_key, "
                "'update conflict: city: local ''City ' || id || ''' ≠ integration ''Town ' || id || '''', now() "
                "FROM couplings"), {"job": job_id})
            conn.execute(sa.text("UPDATE couplings c SET skipped = true, skip_reason = 'update_conflict', last_error_id = e.id "
                                 "FROM job_errors e WHERE e.coupling_id = c.id"))
            create_jobs(conn, [("CUSTOMER", {})] * N_JOBS_EXTRA, "sync")

        app = create_app(settings, store, build_broker(settings))
        client = TestClient(app)
        token = client.post("/api/token", json={"username": "bench", "password": "bench"}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        page = TestClient(app, follow_redirects=True)
        page.post("/login", data={"username": "bench", "password": "bench",
                                  "csrf_token": page.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]})

        def ok(reply: object) -> None:
            assert getattr(reply, "status_code") == 200, reply

        assert len(client.get("/api/errors", headers=auth).json()) == n  # warm-up, and the check that all are there
        measured = {
            "baseline: views.error_objects": timed(lambda: views.error_objects(store), args.runs),
            "GET /api/errors": timed(lambda: ok(client.get("/api/errors", headers=auth)), args.runs),
            "GET /errors (page)": timed(lambda: ok(page.get("/errors")), args.runs),
            "GET /errors?view=groups": timed(lambda: ok(page.get("/errors?view=groups")), args.runs),
            "GET /jobs (page 1)": timed(lambda: ok(page.get("/jobs")), args.runs),
        }
        size = len(page.get("/errors").content)
        store.dispose()
        erp.dispose()
        crm.dispose()
        from tablesync.apps.engines import dispose_all

        dispose_all()  # the databases are dropped next: close the pooled connections

    base = statistics.median(measured["baseline: views.error_objects"])
    print(f"console with {n:,} skipped couplings (each checked live in both apps) and {N_JOBS_EXTRA + 1:,} jobs; "
          f"medians of {args.runs}")
    for name, times in measured.items():
        med = statistics.median(times)
        print(f"  {name:32s} {med * 1000:8.1f} ms   ratio to baseline {med / base:5.2f}   runs: "
              + ", ".join(f"{t * 1000:.0f}" for t in times))
    print(f"  errors page size: {size / 1024:.0f} KiB (500 rows listed)")


if __name__ == "__main__":
    main()
