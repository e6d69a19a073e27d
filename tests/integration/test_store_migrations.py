"""Store migrations keep what earlier versions stored."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from tablesync.db.engine import create_engine
from tests.conftest import RUN_ID, create_pg_db, drop_pg_db


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0006_widens_record_keys_without_losing_a_coupling(dialect: str, tmp_path: Path) -> None:
    from tablesync.store.migrate import upgrade

    name = f"ts_{RUN_ID}_mig6"
    url = create_pg_db(name) if dialect == "postgresql" else f"sqlite:///{tmp_path / 'store.db'}"
    engine = create_engine(url)
    try:
        upgrade(engine, "0005")
        now = datetime.now(timezone.utc)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO couplings (mapping, local_key, integration_key, state, failures, skipped, created_at, "
                                 "last_values) VALUES ('M', '42', 'a9f0c2de-0000-4000-8000-000000000001', 'synced', 0, false, :t, "
                                 "'{\"local\": {\"name\": \"x\"}}')"), {"t": now})
        upgrade(engine)
        long_key = '["' + "x" * 300 + '","1"]'  # a composite key longer than the 255 characters of 0005
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO couplings (mapping, local_key, integration_key, state, failures, skipped, created_at) "
                                 "VALUES ('M', :k, '7', 'synced', 0, false, :t)"), {"k": long_key, "t": now})
            rows = conn.execute(sa.text("SELECT local_key, integration_key, last_values FROM couplings ORDER BY id")).all()
            with pytest.raises(sa.exc.IntegrityError):  # the unique indexes survived
                with conn.begin_nested():
                    conn.execute(sa.text("INSERT INTO couplings (mapping, local_key, state, failures, skipped, created_at) "
                                         "VALUES ('M', '42', 'synced', 0, false, :t)"), {"t": now})
        assert rows[0][:2] == ("42", "a9f0c2de-0000-4000-8000-000000000001")
        assert "name" in str(rows[0][2])
        assert rows[1][:2] == (long_key, "7")
    finally:
        engine.dispose()
        if dialect == "postgresql":
            drop_pg_db(name)
