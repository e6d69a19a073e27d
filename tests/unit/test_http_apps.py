"""HTTP apps without a service: the `odata:` app's settings and their checks, the table shape built
from `$metadata`, and the sign-in (an OAuth2 token fetched from a real local token endpoint)."""

from __future__ import annotations

import base64
import copy
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tablesync.apps.api_table import edm_table
from tablesync.apps.http_auth import http_auth
from tablesync.apps.odata import Metadata
from tablesync.apps.schema import category
from tablesync.config.load import parse_config
from tablesync.config.model import AuthSpec
from tablesync.errors import ConfigError

BASE: dict[str, Any] = {
    "apps": {"erp": {"url": "${ERP_DATABASE_URL}"}, "crm": {"odata": "${CRM_ODATA_URL}"}},
    "mappings": [{
        "name": "CUSTOMER",
        "local": {"app": "erp", "table": "customers", "key": "id", "modified": "modified_at"},
        "integration": {"app": "crm", "table": "Accounts", "key": "ID", "modified": "modifiedAt"},
        "direction": "to_integration",
        "fields": [{"local": "name", "integration": "name"}],
    }],
}


def problems(mutate: Any) -> list[str]:
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "tablesync.yaml")
    return [str(p) for p in info.value.problems]


def test_an_odata_app_with_its_settings_is_accepted() -> None:
    data = copy.deepcopy(BASE)
    data["apps"]["crm"].update(auth={"type": "oauth2", "token_url": "https://login.example/token", "client_id": "${CRM_ID}",
                                     "client_secret": "${CRM_SECRET}", "scope": "https://org.example/.default"},
                               rate_limit=5, overlap_seconds=10, batch_size=50)
    cfg = parse_config(data, "tablesync.yaml")
    crm = cfg.apps["crm"]
    assert crm.http and crm.rate_limit == 5 and crm.auth is not None and crm.auth.type == "oauth2"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["apps"]["crm"].update(url="postgresql://x/y"), "app crm: give the app either url: (a database URL) or odata: "
                                                                "(an OData v4 service root), not both"),
    (lambda d: d["apps"]["crm"].pop("odata"), "app crm: give the app either url: (a database URL) or odata: "
                                              "(an OData v4 service root), not neither"),
    (lambda d: d["apps"]["erp"].update(rate_limit=3), "app erp: rate_limit apply to an HTTP app (odata:), not to a database (url:)"),
    (lambda d: d["apps"]["crm"].update(auth={"type": "bearer"}), "app crm: auth token is required with type bearer"),
    (lambda d: d["apps"]["crm"].update(auth={"type": "basic", "username": "u", "password": "${P}", "token": "${T}"}),
     "app crm: auth token does not apply to type basic"),
    (lambda d: d["apps"]["crm"].update(auth={"type": "basic", "username": "u", "password": "hunter2"}),
     'app crm, auth password: holds a literal secret; write password: "${CRM_PASSWORD}"'),
    (lambda d: d["apps"]["crm"].update(odata="https://u:hunter2@crm.example/odata/"),
     'app crm, odata: holds a literal password; tablesync never stores secrets: write odata: "${CRM_ODATA_URL}"'),
    (lambda d: d["apps"]["crm"].update(odata="crm.example/odata"), "app crm, odata: not an HTTP URL"),
    (lambda d: d["apps"]["crm"].update(auth={"type": "kerberos"}), "app crm, auth, type: 'kerberos' is not allowed"),
    (lambda d: d["mappings"][0]["integration"].update(filter="statecode = 0"),
     "mapping CUSTOMER, integration: filter: is not offered on an HTTP app (crm); remove it"),
    (lambda d: d["mappings"][0]["integration"].update(key=["ID", "name"]),
     "mapping CUSTOMER, integration: an entity set of an HTTP app (crm) has a one-property key"),
    (lambda d: d["mappings"][0].update(match_on=["name"]), "mapping CUSTOMER, match_on: is not offered with an HTTP app"),
])
def test_http_app_settings_are_checked_with_a_clear_message(mutate: Any, expected: str) -> None:
    found = problems(mutate)
    assert any(expected in p for p in found), found


METADATA = """<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
 <edmx:DataServices>
  <Schema Namespace="Crm" xmlns="http://docs.oasis-open.org/odata/ns/edm">
   <EntityContainer Name="C"><EntitySet Name="Accounts" EntityType="Crm.Account"/></EntityContainer>
   <EntityType Name="Account">
    <Key><PropertyRef Name="accountid"/></Key>
    <Property Name="accountid" Type="Edm.Guid" Nullable="false"/>
    <Property Name="name" Type="Edm.String" MaxLength="160" Nullable="false"/>
    <Property Name="revenue" Type="Edm.Decimal" Precision="19" Scale="4"/>
    <Property Name="numberofemployees" Type="Edm.Int32"/>
    <Property Name="donotemail" Type="Edm.Boolean"/>
    <Property Name="modifiedon" Type="Edm.DateTimeOffset"/>
    <Property Name="birthday" Type="Edm.Date"/>
    <Property Name="photo" Type="Edm.Stream"/>
   </EntityType>
   <Annotations Target="Crm.Account/modifiedon"><Annotation Term="Core.Computed" Bool="true"/></Annotations>
   <Annotations Target="Crm.Account/accountid"><Annotation Term="Core.ComputedDefaultValue"/></Annotations>
  </Schema>
 </edmx:DataServices>
</edmx:Edmx>"""


def test_an_entity_set_becomes_a_table_of_the_corresponding_types() -> None:
    table = edm_table(Metadata.parse(METADATA).entity_set("Accounts"))
    c = table.c
    assert [category(c[n].type) for n in ("accountid", "name", "revenue", "numberofemployees", "donotemail", "modifiedon", "birthday")] \
        == ["uuid", "string", "numeric", "integer", "boolean", "datetime", "date"]
    assert c.accountid.primary_key and not c.accountid.nullable and c.accountid.server_default is not None
    assert c.name.type.length == 160 and not c.name.nullable and c.name.server_default is None
    assert (c.revenue.type.precision, c.revenue.type.scale) == (19, 4)
    assert c.modifiedon.info["computed"] and c.modifiedon.server_default is not None
    assert isinstance(c.photo.type, sa.types.NullType) and c.photo.info["edm_type"] == "Edm.Stream"


@pytest.fixture
def token_endpoint() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A real OAuth2 token endpoint on loopback that grants client credentials and records the requests."""
    asked: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            form = dict(httpx.QueryParams(self.rfile.read(int(self.headers["Content-Length"])).decode()))
            form["authorization"] = self.headers.get("Authorization", "")
            asked.append(form)
            body = json.dumps({"access_token": f"token-{len(asked)}", "token_type": "Bearer", "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # the API: it echoes the Authorization header it got
            body = json.dumps({"auth": self.headers.get("Authorization")}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_oauth2_client_credentials_fetch_a_token_once_and_send_it(token_endpoint: tuple[str, list[dict[str, str]]]) -> None:
    base, asked = token_endpoint
    spec = AuthSpec(type="oauth2", token_url=f"{base}/token", client_id="${CID}", client_secret="${SECRET}", scope="api/.default")
    auth, headers = http_auth("crm", spec, {"CID": "tablesync", "SECRET": "s3cret"})
    with httpx.Client(auth=auth, headers=headers) as client:
        seen = [client.get(f"{base}/api/data").json()["auth"] for _ in range(3)]
    assert seen == ["Bearer token-1"] * 3  # cached: one token for the three requests
    assert len(asked) == 1 and asked[0]["grant_type"] == "client_credentials" and asked[0]["scope"] == "api/.default"
    # the client authenticates as RFC 6749 2.3.1 prefers (client_secret_basic, which Entra ID accepts)
    assert asked[0]["authorization"] == "Basic " + base64.b64encode(b"tablesync:s3cret").decode()


def test_basic_and_bearer_sign_ins_take_their_secrets_from_the_environment() -> None:
    auth, headers = http_auth("crm", AuthSpec(type="bearer", token="${CRM_TOKEN}"), {"CRM_TOKEN": "abc"})
    assert auth is None and headers == {"Authorization": "Bearer abc"}
    auth, headers = http_auth("crm", AuthSpec(type="basic", username="u", password="${PW}"), {"PW": "pw"})
    assert isinstance(auth, httpx.BasicAuth) and headers == {}
    with pytest.raises(ConfigError, match="app crm, auth token: environment variable CRM_TOKEN is not set"):
        http_auth("crm", AuthSpec(type="bearer", token="${CRM_TOKEN}"), {})
