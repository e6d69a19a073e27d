"""Sync into an OData v4 service (the test CRM on SAP CAP), against the service's own ceiling.

    python benchmarks/odata_bench.py [--rows 2000] [--runs 3] [--changes 200]

Real path: a PostgreSQL ERP, the store on PostgreSQL, the Redis broker, one `tablesync worker`
process (1 thread), `tablesync sync`; the job's own start/finish times are the measure. The
ceiling, measured in the same run against a fresh server each time: the same records sent by a
plain httpx loop, one POST (or PATCH) per record, and the same records as multipart `$batch`
requests of 100 (what tablesync sends), with no reading, deciding or recording around them.
Prints a table and, last, one line of JSON with medians and ratios.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust), Redis on 127.0.0.1:6379 and the test
CRM installed (`cd tests/odata_crm && npm ci`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync_bench import Tablesync, databases, execute  # noqa: E402

from tablesync.apps.odata import WRITE_HEADERS, Call, ODataService  # noqa: E402
from tests.integration.odata_server import start_crm  # noqa: E402

SOURCE_DDL = """CREATE TABLE customers (id int PRIMARY KEY, number text NOT NULL, name text NOT NULL, email text,
  credit_limit numeric(12,2), modified_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON customers (modified_at, id)"""
FILL = """INSERT INTO customers (id, number, name, email, credit_limit, modified_at)
SELECT g, 'C' || lpad(g::text, 8, '0'), 'Customer ' || g, 'customer' || g || '@example.com', (g % 100000) / 4.0,
  now() - interval '1 second' * g
FROM generate_series(1, :n) g"""
CONFIG = """apps:
  erp: {{url: "{src}"}}
  crm: {{odata: "{crm}"}}
mappings:
  - name: CUSTOMER
    local:       {{app: erp, table: customers, key: id, modified: modified_at}}
    integration: {{app: crm, table: Accounts, key: ID, modified: modifiedAt}}
    direction: to_integration
    schedule: "every 1d"
    fields:
      - {{local: number, integration: accountnumber}}
      - {{local: name, integration: name}}
      - {{local: email, integration: emailaddress1}}
      - {{local: credit_limit, integration: creditlimit}}
"""


def records(rows: int) -> list[dict[str, Any]]:
    """The records tablesync sends, as the plain loops send them."""
    return [{"accountnumber": f"C{g:08d}", "name": f"Customer {g}", "emailaddress1": f"customer{g}@example.com",
             "creditlimit": str(Decimal(g % 100000) / 4)} for g in range(1, rows + 1)]


def plain_loop(url: str, method: str, items: list[tuple[str, dict[str, Any]]]) -> float:
    """Each record its own request on one kept-alive connection: the service's per-request ceiling."""
    with httpx.Client(base_url=url, headers={"Accept": "application/json"}) as client:
        started = time.perf_counter()
        for path, body in items:
            answer = client.request(method, path, content=json.dumps(body).encode(),
                                    headers={**WRITE_HEADERS, **({"If-Match": "*"} if method == "PATCH" else {})})
            if answer.status_code not in (200, 201, 204):
                raise RuntimeError(f"{method} {path}: HTTP {answer.status_code}: {answer.text[:300]}")
        return time.perf_counter() - started


def plain_batches(url: str, method: str, items: list[tuple[str, dict[str, Any]]]) -> float:
    """The same records as $batch requests of 100, through the connector's own encoder and parser."""
    service = ODataService(url, batch_size=100)
    calls = [Call(method, path, json.dumps(body).encode(), {**WRITE_HEADERS, **({"If-Match": "*"} if method == "PATCH" else {})})
             for path, body in items]
    started = time.perf_counter()
    answers = service.each(calls)
    took = time.perf_counter() - started
    bad = [a for a in answers if a.status_code not in (200, 201, 204)]
    service.close()
    if bad or len(answers) != len(calls):
        raise RuntimeError(f"$batch: {len(bad)} refused, {len(answers)} answers: {bad[:1] and bad[0].text[:300]}")
    return took


def keys_by_number(url: str) -> dict[str, str]:
    out: dict[str, str] = {}
    next_url: str | None = url + "Accounts?$select=ID,accountnumber"
    while next_url:
        body = httpx.get(next_url, headers={"Accept": "application/json"}).json()
        out.update({a["accountnumber"]: a["ID"] for a in body["value"]})
        next_url = body.get("@odata.nextLink") and url + body["@odata.nextLink"]
    return out


def measure(rows: int, runs: int, changes: int, tmp: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("initial", "incremental", "post_loop", "post_batch",
                                                     "patch_loop", "patch_batch")}
    sent = records(rows)
    changed = sent[:changes]
    with databases("src") as urls:
        execute(urls["src"], SOURCE_DDL)
        execute(urls["src"], FILL, n=rows)
        for run in range(runs):
            for kind in ("loop", "batch"):  # the ceiling: a fresh server each, as tablesync gets
                crm = start_crm(tmp / f"cds-{kind}-{run}.log")
                try:
                    send = plain_loop if kind == "loop" else plain_batches
                    out[f"post_{kind}"].append(send(crm.url, "POST", [("Accounts", r) for r in sent]))
                    keys = keys_by_number(crm.url)
                    out[f"patch_{kind}"].append(send(crm.url, "PATCH", [(f"Accounts({keys[r['accountnumber']]})",
                                                                         {"name": r["name"] + " x"}) for r in changed]))
                finally:
                    crm.stop()
            crm = start_crm(tmp / f"cds-tablesync-{run}.log")
            try:
                with databases("store") as store:
                    config = CONFIG.format(src=urls["src"], crm=crm.url)
                    ts = Tablesync({**urls, "store": store["store"]}, tmp, config=config)
                    try:
                        job = ts.sync()
                        assert job["inserted"] == rows, job
                        out["initial"].append(job["seconds"])
                        execute(urls["src"], "UPDATE customers SET name = name || ' x', modified_at = now() WHERE id <= :k",
                                k=changes)
                        job = ts.sync()
                        assert job["modified"] == changes, job
                        out["incremental"].append(job["seconds"])
                    finally:
                        ts.stop()
                execute(urls["src"], "UPDATE customers SET name = 'Customer ' || id WHERE id <= :k", k=changes)
            finally:
                crm.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--changes", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = measure(args.rows, args.runs, args.changes, Path(tmp))
    med = {k: statistics.median(v) for k, v in got.items()}
    initial = {"tablesync": args.rows / med["initial"], "httpx_post_loop": args.rows / med["post_loop"],
               "httpx_batch_100": args.rows / med["post_batch"]}
    incremental = {"tablesync": args.changes / med["incremental"], "httpx_patch_loop": args.changes / med["patch_loop"],
                   "httpx_batch_100": args.changes / med["patch_batch"]}

    def runs(key: str) -> str:
        return ", ".join(f"{t:.2f}" for t in got[key])

    print(f"{args.rows:,} records into the OData CRM (SAP CAP, in-memory SQLite), {args.changes:,} changed, "
          f"{args.runs} runs each, medians")
    print(f"  {'path':<44} {'seconds':>8} {'records/s':>10}   runs")
    for key, label, n in (("initial", "tablesync initial sync (job)", args.rows),
                          ("post_loop", "httpx loop, one POST per record", args.rows),
                          ("post_batch", "httpx, $batch of 100 POSTs", args.rows),
                          ("incremental", "tablesync incremental run (job)", args.changes),
                          ("patch_loop", "httpx loop, one PATCH per record", args.changes),
                          ("patch_batch", "httpx, $batch of 100 PATCHes", args.changes)):
        print(f"  {label:<44} {med[key]:8.2f} {n / med[key]:10,.0f}   {runs(key)}")
    print(json.dumps({"rows": args.rows, "changes": args.changes, "runs": args.runs,
                      "initial_records_per_s": {k: round(v, 1) for k, v in initial.items()},
                      "incremental_records_per_s": {k: round(v, 1) for k, v in incremental.items()},
                      "ratio_initial_vs_post_loop": round(initial["tablesync"] / initial["httpx_post_loop"], 3),
                      "ratio_initial_vs_batch": round(initial["tablesync"] / initial["httpx_batch_100"], 3),
                      "ratio_incremental_vs_patch_loop": round(incremental["tablesync"] / incremental["httpx_patch_loop"], 3)}))


if __name__ == "__main__":
    main()
