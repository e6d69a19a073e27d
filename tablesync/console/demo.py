"""`tablesync demo`: two small SQLite apps, a config, real sync runs, a bad record, a fix.

Everything runs through the real path (store migrations, config check/apply, actors on the
in-process broker, job rows), so what the demo prints is what an operator would see.
"""

from __future__ import annotations

import os
import random
import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tablesync.console import views
from tablesync.console.render import console, errors_table, job_object, jobs_table, table

CONFIG = """\
apps:
  erp: {{url: "{erp}"}}
  crm: {{url: "{crm}"}}
mappings:
  - name: CUSTOMER
    local:       {{app: erp, table: customers, key: id, modified: modified_at, filter: "NOT blocked"}}
    integration: {{app: crm, table: accounts, key: account_id, modified: modifiedon}}
    direction: to_integration
    schedule: "every 30s"
    fields:
      - {{local: number,       integration: accountnumber}}
      - {{local: name,         integration: name}}
      - {{local: email,        integration: emailaddress1, transform: lower}}
      - {{local: city,         integration: address1_city}}
      - {{local: country,      integration: country_code, transform: upper}}
      - {{local: credit_limit, integration: creditlimit}}
      - {{integration: customertypecode, constant: 3}}
  - name: LEAD
    local:       {{app: erp, table: prospects, key: id, modified: modified_at}}
    integration: {{app: crm, table: leads, key: lead_id, modified: modifiedon}}
    direction: from_integration
    schedule: "every 1m"
    fields:
      - {{local: name,    integration: fullname, transform: strip}}
      - {{local: email,   integration: emailaddress1}}
      - {{local: company, integration: companyname}}
  - name: CONTACT
    local:       {{app: erp, table: contacts, key: id, modified: modified_at}}
    integration: {{app: crm, table: contacts, key: contactid, modified: modifiedon}}
    direction: bidirectional
    schedule: "every 30s"
    depends_on: [CUSTOMER]
    fields:
      - {{local: customer_id, integration: parentcustomerid, parent: CUSTOMER, direction: to_integration}}
      - {{local: name,        integration: fullname}}
      - {{local: phone,       integration: telephone1}}
      - {{local: title,       integration: jobtitle}}
"""

FIRST = ["Anna", "Bo", "Carla", "Dmitri", "Eva", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kaja", "Lars", "Mona", "Nils"]
LAST = ["Hansen", "Jensen", "Nielsen", "Pedersen", "Larsen", "Sørensen", "Rasmussen", "Christensen", "Berg", "Holm"]
CITIES = [("Copenhagen", "dk"), ("Aarhus", "dk"), ("Malmö", "se"), ("Oslo", "no"), ("Hamburg", "de"), ("Odense", "dk")]


def create_apps(erp_url: str, crm_url: str | None, rows: int) -> None:
    """The demo's two apps, created and filled in any database SQLAlchemy speaks (SQLite for
    `tablesync demo`, PostgreSQL and MariaDB in docker-compose). With `crm_url` None, the ERP only:
    the CRM is the OData service of compose/odata-crm, which makes and fills its own tables."""
    now = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=5)
    rng = random.Random(7)
    erp_md, crm_md = sa.MetaData(), sa.MetaData()
    customers = sa.Table("customers", erp_md,
                         sa.Column("id", sa.Integer, primary_key=True), sa.Column("number", sa.String(20), unique=True),
                         sa.Column("name", sa.String(100), nullable=False), sa.Column("email", sa.String(200)),
                         sa.Column("city", sa.String(60)), sa.Column("country", sa.String(2)),
                         sa.Column("credit_limit", sa.Numeric(12, 2)), sa.Column("blocked", sa.Boolean, nullable=False),
                         sa.Column("modified_at", sa.DateTime, nullable=False, index=True))
    sa.Table("prospects", erp_md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(100)),
             sa.Column("email", sa.String(200)), sa.Column("company", sa.String(100)),
             sa.Column("modified_at", sa.DateTime, server_default=sa.func.current_timestamp()))
    sa.Table("accounts", crm_md, sa.Column("account_id", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("accountnumber", sa.String(20)), sa.Column("name", sa.String(100), nullable=False),
             sa.Column("emailaddress1", sa.String(200)), sa.Column("address1_city", sa.String(60)),
             sa.Column("country_code", sa.String(2)), sa.Column("creditlimit", sa.Numeric(12, 2)),
             sa.Column("customertypecode", sa.Integer, nullable=False),
             sa.Column("modifiedon", sa.DateTime, server_default=sa.func.current_timestamp()))
    leads = sa.Table("leads", crm_md, sa.Column("lead_id", sa.Integer, primary_key=True),
                     sa.Column("fullname", sa.String(100)), sa.Column("emailaddress1", sa.String(200)),
                     sa.Column("companyname", sa.String(100)), sa.Column("modifiedon", sa.DateTime, nullable=False))
    contacts = sa.Table("contacts", erp_md, sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("customer_id", sa.Integer), sa.Column("name", sa.String(100), nullable=False),
                        sa.Column("phone", sa.String(40)), sa.Column("title", sa.String(60)),
                        sa.Column("modified_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()))
    sa.Table("contacts", crm_md, sa.Column("contactid", sa.Integer, primary_key=True, autoincrement=True),
             sa.Column("parentcustomerid", sa.Integer), sa.Column("fullname", sa.String(100), nullable=False),
             sa.Column("telephone1", sa.String(40)), sa.Column("jobtitle", sa.String(60)),
             sa.Column("modifiedon", sa.DateTime, server_default=sa.func.current_timestamp()))
    from tablesync.db.engine import create_engine

    erp = create_engine(erp_url)
    erp_md.create_all(erp)
    with erp.begin() as conn:
        batch = []
        for i in range(1, rows + 1):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            city, country = rng.choice(CITIES)
            batch.append({"id": i, "number": f"C{10000 + i}", "name": f"{first} {last}",
                          "email": f"{first}.{last}{i}@Example.com".replace("ø", "o"), "city": city, "country": country,
                          "credit_limit": Decimal(rng.randrange(0, 50000, 500)), "blocked": i % 25 == 0,
                          "modified_at": now - timedelta(seconds=rows - i)})
        conn.execute(customers.insert(), batch)
        conn.execute(contacts.insert(), [{"id": i, "customer_id": i, "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                                          "phone": f"+45 {20000000 + i}", "title": "Buyer", "modified_at": now}
                                         for i in range(1, 6)])
    erp.dispose()
    if crm_url is None:
        return
    crm = create_engine(crm_url)
    crm_md.create_all(crm)
    with crm.begin() as conn:
        conn.execute(leads.insert(), [{"lead_id": i, "fullname": f"  {rng.choice(FIRST)} {rng.choice(LAST)} ",
                                       "emailaddress1": f"lead{i}@example.org", "companyname": f"Prospect {i} ApS",
                                       "modifiedon": now} for i in range(1, rows // 10 + 1)])
    crm.dispose()


def next_commands(base: Path, skipped: dict[str, Any]) -> list[str]:
    """The commands the demo suggests, runnable as printed (tests run them): the store, then
    `tablesync run` in the background, then reads, a dry run and the actions on its two errors."""
    cmds = [(f"export TABLESYNC_STORE_URL=sqlite:///{base / 'store.db'}", ""),
            (f"tablesync run > {base / 'run.log'} 2>&1 &", "scheduler + workers on this store (no broker needed)"),
            ("tablesync errors", "the two errors above, with their coupling ids"),
            ("tablesync log CONTACT 2", "contact 2's synchronization log: every job that touched it"),
            ("tablesync sync CUSTOMER --dry-run", "what a run would do now; writes nothing")]
    if "CONTACT" in skipped:
        cmds.append((f"tablesync resolve {skipped['CONTACT'].id} --use local --wait", "contact 2: the ERP's phone wins"))
    if "CUSTOMER" in skipped:
        cmds.append((f"tablesync restore {skipped['CUSTOMER'].id} --wait", "customer 10: its deleted CRM account is re-created"))
    cmds += [("tablesync errors", "none left"), ("tablesync jobs --limit 5", "the jobs those commands made")]
    width = max(len(c) for c, note in cmds if note)
    return [f"{c:<{width}}  # {note}" if note else c for c, note in cmds]


def run_demo(directory: str, rows: int = 300) -> int:
    from tablesync.apps.live_check import check_live
    from tablesync.config.load import load_config
    from tablesync.config.settings import get_settings
    from tablesync.console.inprocess import InProcess
    from tablesync.db.engine import create_engine
    from tablesync.store.mappings import apply_config
    from tablesync.store.migrate import upgrade
    from tablesync.worker.enqueue import enqueue_sync
    from tablesync.worker.store_engine import reset_store_engine

    out = console()
    base = Path(directory).resolve()
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    erp, crm, store_path = base / "erp.db", base / "crm.db", base / "store.db"
    os.environ["TABLESYNC_STORE_URL"] = f"sqlite:///{store_path}"
    os.environ["TABLESYNC_CONFIG"] = str(base / "tablesync.yaml")
    os.environ.pop("TABLESYNC_BROKER_URL", None)
    get_settings.cache_clear()
    reset_store_engine()
    settings = get_settings()

    out.print(f"[bold]1. Two demo apps[/] in {base}: ERP customers/prospects ({rows} customers, {rows // 25} of them "
              "blocked, which the CUSTOMER mapping's filter leaves out), CRM accounts/leads")
    create_apps(f"sqlite:///{erp}", f"sqlite:///{crm}", rows)
    (base / "tablesync.yaml").write_text(CONFIG.format(erp=f"sqlite:///{erp}", crm=f"sqlite:///{crm}"))
    store = create_engine(settings.store_url)
    upgrade(store)
    cfg = load_config(base / "tablesync.yaml")
    problems = check_live(cfg)
    if problems:
        for p in problems:
            out.print(f"[red]config problem[/]: {p}")
        return 1
    apply_config(store, cfg, applied_by="demo")
    out.print("[bold]2. Config checked against the live tables and applied[/]: mappings CUSTOMER (ERP → CRM), "
              "LEAD (CRM → ERP), CONTACT (both ways, after CUSTOMER)")

    erp_engine, crm_engine = sa.create_engine(f"sqlite:///{erp}"), sa.create_engine(f"sqlite:///{crm}")
    with InProcess(store, settings, threads=2) as app:
        def cycle(title: str) -> list[int]:
            ids = [enqueue_sync(store, app.broker, settings, m, operator="demo") for m in ("CUSTOMER", "LEAD", "CONTACT")]
            for i in ids:
                app.wait_job(i)
            out.print(f"[bold]{title}[/]")
            return ids

        cycle("3. Initial synchronization")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with erp_engine.begin() as conn:
            conn.execute(sa.text("UPDATE customers SET city = 'Roskilde', modified_at = :now WHERE id IN (1, 2, 3)"), {"now": now})
            conn.execute(sa.text("UPDATE customers SET credit_limit = 'a lot', modified_at = :now WHERE id = 4"), {"now": now})
            conn.execute(sa.text("INSERT INTO customers (id, number, name, email, city, country, credit_limit, blocked, modified_at) "
                                 "VALUES (:id, :n, 'New Customer A/S', 'new@example.com', 'Vejle', 'dk', 1000, 0, :now)"),
                         {"id": rows + 1, "n": f"C{10001 + rows}", "now": now})
        with crm_engine.begin() as conn:
            conn.execute(sa.text("UPDATE leads SET companyname = 'Renamed Lead Co', modifiedon = :now WHERE lead_id = 1"), {"now": now})
            conn.execute(sa.text("DELETE FROM accounts WHERE accountnumber = 'C10010'"))
            conn.execute(sa.text("UPDATE contacts SET jobtitle = 'Head of Purchasing', modifiedon = :now WHERE fullname = "
                                 "(SELECT fullname FROM contacts ORDER BY contactid LIMIT 1)"), {"now": now})
            conn.execute(sa.text("UPDATE contacts SET telephone1 = '+45 99 99 99 99', modifiedon = :now WHERE contactid = "
                                 "(SELECT contactid FROM contacts ORDER BY contactid LIMIT 1 OFFSET 1)"), {"now": now})
        with erp_engine.begin() as conn:
            conn.execute(sa.text("UPDATE contacts SET phone = '+45 11 11 11 11', modified_at = :now WHERE id IN (1, 2)"), {"now": now})
        out.print("[bold]4. Edits in the apps[/]: 3 customers moved city, 1 got a credit limit of 'a lot' (bad data), "
                  "1 new customer, 1 lead renamed in the CRM, the CRM account of customer 10 deleted; contact 1 got a "
                  "new phone in the ERP and a new title in the CRM, contact 2 a different new phone in each app")
        ids = cycle("5. Incremental synchronization: only the changes travel, the bad record fails alone, the deleted "
                    "account is a deletion conflict, contact 1 merges both ways, contact 2 is an update conflict")
        with erp_engine.begin() as conn:
            conn.execute(sa.text("UPDATE customers SET credit_limit = 2500, modified_at = :now WHERE id = 4"),
                         {"now": datetime.now(timezone.utc).replace(tzinfo=None)})
        cycle("6. The bad value was fixed in the ERP: the failed record is retried and lands")

    from tablesync.store.coupling_queries import skipped_couplings
    from tablesync.store.jobs import errors_of, list_jobs

    with store.connect() as conn:
        jobs = [job_object(r) for r in list_jobs(conn, limit=10)]
        errors = errors_of(conn, ids[0])
    out.print(jobs_table(jobs, title="Jobs (tablesync jobs)"))
    if errors:
        out.print(table(f"Errors of job {ids[0]} (tablesync job {ids[0]})", ["source key", "message"],
                        [[e.source_key, e.message] for e in errors]))
    with erp_engine.connect() as a, crm_engine.connect() as b:
        erp_c = a.execute(sa.text("SELECT id, name, phone, title FROM contacts WHERE id IN (1, 2) ORDER BY id")).all()
        crm_c = b.execute(sa.text("SELECT fullname, telephone1, jobtitle FROM contacts ORDER BY contactid LIMIT 2")).all()
    out.print(table("Contacts 1 and 2 in both apps", ["id", "ERP name / phone / title", "CRM name / phone / title"],
                    [[e[0], " / ".join(map(str, e[1:])), " / ".join(map(str, c))] for e, c in zip(erp_c, crm_c)]))
    with crm_engine.connect() as conn:
        sample = conn.execute(sa.text("SELECT accountnumber, name, address1_city, country_code, creditlimit FROM accounts "
                                      "ORDER BY account_id LIMIT 4")).all()
    out.print(table("CRM accounts (first rows)", ["accountnumber", "name", "city", "country", "creditlimit"], [list(r) for r in sample]))
    out.print("[bold]7. What an operator must decide: the coupled data synchronization errors[/] (tablesync errors)")
    out.print(errors_table(views.error_objects(store, None)))
    with store.connect() as conn:
        skipped = {r.mapping: r for r in skipped_couplings(conn)}
    out.print("\n[bold]Next, try[/] (the demo's store is a real one: `tablesync run` runs what the other commands ask for):")
    for cmd in next_commands(base, skipped):
        out.print(f"  {cmd}", soft_wrap=True)
    erp_engine.dispose()
    crm_engine.dispose()
    store.dispose()
    return 0
