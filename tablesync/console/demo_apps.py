"""`tablesync demo-apps`: the demo's ERP and CRM on real servers, and users editing them.

docker-compose runs `seed` once and `traffic` forever, so that `docker compose up` shows syncing
on the dashboard: a few edits in each app every few seconds, a new customer now and then, and an
edit of the same contact field in both apps once in a while (an update conflict to resolve).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone

import sqlalchemy as sa

from tablesync.console.demo import CITIES, FIRST, LAST, create_apps
from tablesync.db.engine import create_engine


def seed(erp_url: str, crm_url: str, rows: int) -> bool:
    """Create and fill the demo apps unless the ERP already has its customers table; True if it did."""
    erp = create_engine(erp_url)
    try:
        if sa.inspect(erp).has_table("customers"):
            return False
    finally:
        erp.dispose()
    create_apps(erp_url, crm_url, rows)
    return True


def traffic(erp_url: str, crm_url: str, every: float, stop: threading.Event, rounds: int | None = None,
            seed_value: int | None = None) -> int:
    """Edit both apps every `every` seconds until `stop` is set (or `rounds` rounds ran)."""
    rng = random.Random(seed_value)
    erp, crm = create_engine(erp_url), create_engine(crm_url)
    done = 0
    try:
        while not stop.is_set() and (rounds is None or done < rounds):
            one_round(erp, crm, rng, done)
            done += 1
            stop.wait(every)
    finally:
        erp.dispose()
        crm.dispose()
    return done


def one_round(erp: sa.Engine, crm: sa.Engine, rng: random.Random, n: int) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # the apps keep naive UTC, as the demo's do
    with erp.begin() as conn:
        ids = conn.execute(sa.text("SELECT id FROM customers ORDER BY id")).scalars().all()
        for cid in rng.sample(ids, min(2, len(ids))):
            city, country = rng.choice(CITIES)
            conn.execute(sa.text("UPDATE customers SET city = :city, country = :country, credit_limit = :limit, "
                                 "modified_at = :now WHERE id = :id"),
                         {"city": city, "country": country, "limit": rng.randrange(0, 50000, 500), "now": now, "id": cid})
        if n % 10 == 0:
            new_id = (max(ids) if ids else 0) + 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            conn.execute(sa.text("INSERT INTO customers (id, number, name, email, city, country, credit_limit, blocked, "
                                 "modified_at) VALUES (:id, :number, :name, :email, 'Vejle', 'dk', 1000, :blocked, :now)"),
                         {"id": new_id, "number": f"C{10000 + new_id}", "name": f"{first} {last}",
                          "email": f"{first}.{last}{new_id}@example.com".replace("ø", "o"), "blocked": False, "now": now})
        contacts = conn.execute(sa.text("SELECT id FROM contacts ORDER BY id")).scalars().all()
    with crm.begin() as conn:
        leads = conn.execute(sa.text("SELECT lead_id FROM leads ORDER BY lead_id")).scalars().all()
        if leads:
            conn.execute(sa.text("UPDATE leads SET companyname = :c, modifiedon = :now WHERE lead_id = :id"),
                         {"c": f"Prospect {rng.randrange(1000)} ApS", "now": now, "id": rng.choice(leads)})
        crm_contacts = conn.execute(sa.text("SELECT contactid FROM contacts ORDER BY contactid")).scalars().all()
        if crm_contacts:
            conn.execute(sa.text("UPDATE contacts SET jobtitle = :t, modifiedon = :now WHERE contactid = :id"),
                         {"t": rng.choice(["Buyer", "Head of Purchasing", "CFO", "Owner"]), "now": now,
                          "id": rng.choice(crm_contacts)})
    if n % 20 == 5 and contacts and crm_contacts:  # the same phone field of one contact, differently in each app
        i = rng.randrange(min(len(contacts), len(crm_contacts)))
        with erp.begin() as conn:
            conn.execute(sa.text("UPDATE contacts SET phone = :p, modified_at = :now WHERE id = :id"),
                         {"p": f"+45 {rng.randrange(10**7, 10**8)}", "now": now, "id": contacts[i]})
        with crm.begin() as conn:
            conn.execute(sa.text("UPDATE contacts SET telephone1 = :p, modifiedon = :now WHERE contactid = :id"),
                         {"p": f"+45 {rng.randrange(10**7, 10**8)}", "now": now, "id": crm_contacts[i]})


def run_forever(erp_url: str, crm_url: str, every: float) -> int:
    """`traffic` until SIGTERM/SIGINT (a compose service's life)."""
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started = time.monotonic()
    rounds = traffic(erp_url, crm_url, every, stop)
    print(f"demo traffic: {rounds} rounds in {time.monotonic() - started:.0f}s")
    return 0
