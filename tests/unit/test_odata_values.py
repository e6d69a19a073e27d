"""OData values and literals as the connector writes them into URLs and bodies."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tablesync.apps.odata import Metadata, from_json, literal, to_json

EDMX = """<?xml version="1.0"?><edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
<edmx:DataServices><Schema Namespace="S" xmlns="http://docs.oasis-open.org/odata/ns/edm">
<EntityContainer Name="C"><EntitySet Name="accounts" EntityType="S.account"/><EntitySet Name="notes" EntityType="S.note"/></EntityContainer>
<EntityType Name="account"><Key><PropertyRef Name="accountid"/></Key>
<Property Name="accountid" Type="Edm.Guid" Nullable="false"/><Property Name="name" Type="Edm.String" MaxLength="160"/>
<Property Name="modifiedon" Type="Edm.DateTimeOffset"/></EntityType>
<EntityType Name="note"><Key><PropertyRef Name="id"/></Key><Property Name="id" Type="Edm.Int64" Nullable="false"/></EntityType>
<Annotations Target="S.C/accounts"><Annotation Term="Core.OptimisticConcurrency"><Collection/></Annotation></Annotations>
</Schema></edmx:DataServices></edmx:Edmx>"""


def test_metadata_of_a_dataverse_shaped_service() -> None:
    meta = Metadata.parse(EDMX)
    accounts, notes = meta.entity_set("accounts"), meta.entity_set("notes")
    assert accounts.key == ("accountid",) and accounts.versioned and not notes.versioned
    assert accounts.property("name").max_length == 160 and not accounts.property("accountid").nullable
    assert notes.property("id").edm_type == "Edm.Int64"


def test_literals_and_values() -> None:
    assert literal("Edm.String", "O'Brien") == "'O''Brien'"
    assert literal("Edm.Guid", "8f2c3a3e-0000-0000-0000-000000000001") == "8f2c3a3e-0000-0000-0000-000000000001"
    assert literal("Edm.Int64", 42) == "42"
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert literal("Edm.DateTimeOffset", moment) == "2026-01-02T02:04:05.600000Z"
    assert to_json("Edm.DateTimeOffset", dt.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive: UTC
    assert to_json("Edm.Decimal", Decimal("1234567890123.45")) == "1234567890123.45"
    assert from_json("Edm.DateTimeOffset", "2026-01-02T02:04:05.6Z") == moment
    assert from_json("Edm.Decimal", 12.5) == Decimal("12.5") and from_json("Edm.Date", "2026-01-02") == dt.date(2026, 1, 2)
