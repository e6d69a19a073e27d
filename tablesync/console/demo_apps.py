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
from typing import Any

import httpx
import sqlalchemy as sa

from tablesync.console.demo import CITIES, FIRST, LAST, create_apps
from tablesync.db.engine import create_engine


def seed(erp_url: str, crm_url: str | None, rows: int) -> bool:
    """Create and fill the demo apps unless the ERP already has its customers table; True if it did.
    With `crm_url` None the CRM is the demo's OData service, which fills itself: the ERP only."""
    erp = create_engine(erp_url)
    try:
        if sa.inspect(erp).has_table("customers"):
            return False
    finally:
        erp.dispose()
    create_apps(erp_url, crm_url, rows)
    return True


class SqlCrm:
    """The demo CRM's users on its database (MariaDB in docker-compose)."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def edit(self, rng: random.Random, now: datetime) -> None:
        """A lead's company and a contact's job title, as CRM users change them."""
        with self.engine.begin() as conn:
            leads = conn.execute(sa.text("SELECT lead_id FROM leads ORDER BY lead_id")).scalars().all()
            if leads:
                conn.execute(sa.text("UPDATE leads SET companyname = :c, modifiedon = :now WHERE lead_id = :id"),
                             {"c": company(rng), "now": now, "id": rng.choice(leads)})
            contacts = conn.execute(sa.text("SELECT contactid FROM contacts ORDER BY contactid")).scalars().all()
            if contacts:
                conn.execute(sa.text("UPDATE contacts SET jobtitle = :t, modifiedon = :now WHERE contactid = :id"),
                             {"t": rng.choice(TITLES), "now": now, "id": rng.choice(contacts)})

    def contacts(self) -> dict[str, Any]:
        """Contact name → key."""
        with self.engine.connect() as conn:
            return {name: key for key, name in conn.execute(sa.text("SELECT contactid, fullname FROM contacts"))}

    def set_phone(self, key: Any, phone: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("UPDATE contacts SET telephone1 = :p, modifiedon = :now WHERE contactid = :id"),
                         {"p": phone, "now": now, "id": key})

    def close(self) -> None:
        self.engine.dispose()


class ODataCrm:
    """The demo CRM's users on its OData service (compose/odata-crm): the service stamps `modifiedon`."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/") + "/", timeout=10)

    def _keys(self, entity_set: str, key: str) -> list[str]:
        answer = self.client.get(entity_set, params={"$select": key, "$orderby": key})
        answer.raise_for_status()
        return [row[key] for row in answer.json()["value"]]

    def _patch(self, entity_set: str, key: str, values: dict[str, Any]) -> None:
        """Read the record, then change it under its ETag, as a user's form does (the service requires If-Match)."""
        read = self.client.get(f"{entity_set}({key})")
        read.raise_for_status()
        self.client.patch(f"{entity_set}({key})", json=values,
                          headers={"If-Match": read.json()["@odata.etag"]}).raise_for_status()

    def edit(self, rng: random.Random, now: datetime) -> None:
        if leads := self._keys("leads", "leadid"):
            self._patch("leads", rng.choice(leads), {"companyname": company(rng)})
        if contacts := self._keys("contacts", "contactid"):
            self._patch("contacts", rng.choice(contacts), {"jobtitle": rng.choice(TITLES)})

    def contacts(self) -> dict[str, Any]:
        answer = self.client.get("contacts", params={"$select": "contactid,fullname"})
        answer.raise_for_status()
        return {row["fullname"]: row["contactid"] for row in answer.json()["value"]}

    def set_phone(self, key: Any, phone: str, now: datetime) -> None:
        self._patch("contacts", key, {"telephone1": phone})

    def close(self) -> None:
        self.client.close()


TITLES = ["Buyer", "Head of Purchasing", "CFO", "Owner"]


def company(rng: random.Random) -> str:
    return f"Prospect {rng.randrange(1000)} ApS"


def crm_users(crm_url: str) -> SqlCrm | ODataCrm:
    """The CRM's users: on its database, or on its OData service when the URL is http(s)."""
    return ODataCrm(crm_url) if crm_url.startswith(("http://", "https://")) else SqlCrm(crm_url)


def traffic(erp_url: str, crm_url: str, every: float, stop: threading.Event, rounds: int | None = None,
            seed_value: int | None = None) -> int:
    """Edit both apps every `every` seconds until `stop` is set (or `rounds` rounds ran)."""
    rng = random.Random(seed_value)
    erp, crm = create_engine(erp_url), crm_users(crm_url)
    done = 0
    try:
        while not stop.is_set() and (rounds is None or done < rounds):
            one_round(erp, crm, rng, done)
            done += 1
            stop.wait(every)
    finally:
        erp.dispose()
        crm.close()
    return done


def one_round(erp: sa.Engine, crm: SqlCrm | ODataCrm, rng: random.Random, n: int) -> None:
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
        contacts = dict(conn.execute(sa.text("SELECT name, id FROM contacts ORDER BY id")).all())
    crm.edit(rng, now)
    if n % 20 == 5:  # the same phone field of one contact, differently in each app: an update conflict
        both = sorted(contacts.keys() & (crm_contacts := crm.contacts()).keys())
        if both:
            name = rng.choice(both)
            with erp.begin() as conn:
                conn.execute(sa.text("UPDATE contacts SET phone = :p, modified_at = :now WHERE id = :id"),
                             {"p": f"+45 {rng.randrange(10**7, 10**8)}", "now": now, "id": contacts[name]})
            crm.set_phone(crm_contacts[name], f"+45 {rng.randrange(10**7, 10**8)}", now)


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
