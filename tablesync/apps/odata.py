"""An OData v4 service as an app (`apps.connector`): an entity set is a table, its key property
the key, a property such as `modifiedAt` or `modifiedon` the modified-on, the `@odata.etag` of a
record its version. Reached over HTTP with httpx, the way Dataverse and most SaaS CRMs are.

- `ODataService` reads the service's `$metadata` (entity sets, keys, properties with their Edm
  types and nullability, whether records carry an ETag) and opens tables.
- `ODataTable.read_changes` filters on modified ≥ watermark, orders by modified then key and
  follows `@odata.nextLink`: the server decides the page size, as OData asks clients to let it.
- Writes (POST, PATCH with `If-Match`, DELETE) go as multipart `$batch` requests of up to
  `batch_size` records, each record a request of its own outside any change set, so each has its
  own result: 412 Precondition Failed is a conflict (the record changed since it was read), any
  other refusal an error carrying the service's own message. A service without `$batch` is written
  one request per record. A service that cannot be reached, or answers 5xx without an OData error
  body, raises AppUnavailable (the job is retried).

A throttled request (429, 503 with Retry-After) waits as asked and is sent again (tenacity); a
request rate per app is shared by every worker through Redis (`shared_rate`, pyrate-limiter).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from email import policy as email_policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

import httpx
from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate, RedisBucket
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_delay

from tablesync.apps.connector import Capabilities, ChangePage, KeyRange, Outcome, Record, Update, WriteResult
from tablesync.errors import AppError, AppUnavailable

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
CONCURRENCY = "Core.OptimisticConcurrency"
COMPUTED, COMPUTED_DEFAULT = "Core.Computed", "Core.ComputedDefaultValue"
QUERY_SAFE = "$,()'"  # left as they are in a query string: OData's own syntax
WRITE_HEADERS = {"Content-Type": "application/json;IEEE754Compatible=true", "Prefer": "return=representation"}


@dataclass(frozen=True)
class Property:
    name: str
    edm_type: str  # Edm.String, Edm.Int32, Edm.Decimal, Edm.DateTimeOffset, …
    nullable: bool = True
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    computed: bool = False  # Core.Computed: the service sets it (a managed modified-on, say); a write may not
    defaulted: bool = False  # Core.ComputedDefaultValue: the service gives it a value when a create has none


@dataclass(frozen=True)
class EntitySet:
    name: str
    key: tuple[str, ...]
    properties: dict[str, Property]
    versioned: bool = False  # Core.OptimisticConcurrency: records carry an ETag, and writes may be conditional

    def property(self, name: str) -> Property:
        try:
            return self.properties[name]
        except KeyError:
            raise AppError(f"entity set {self.name} has no property {name!r}; it has: "
                           f"{', '.join(sorted(self.properties))}") from None


@dataclass
class Metadata:
    """What `$metadata` says of the service's entity sets."""

    entity_sets: dict[str, EntitySet] = field(default_factory=dict)

    @classmethod
    def parse(cls, xml: bytes | str) -> "Metadata":
        root = ElementTree.fromstring(xml)
        types: dict[str, tuple[tuple[str, ...], dict[str, Property]]] = {}
        sets: list[tuple[str, str]] = []
        versioned: set[str] = set()
        notes: dict[str, set[str]] = {}  # "Namespace.Type/Property" → its Core.Computed… terms
        for schema in root.iter(f"{EDM}Schema"):
            namespace = schema.get("Namespace", "")
            for et in schema.findall(f"{EDM}EntityType"):
                key = tuple(str(k.get("Name")) for k in et.findall(f"{EDM}Key/{EDM}PropertyRef"))
                props = {str(p.get("Name")): Property(
                    str(p.get("Name")), str(p.get("Type")), p.get("Nullable", "true") != "false",
                    _int(p.get("MaxLength")), _int(p.get("Precision")), _int(p.get("Scale")))
                    for p in et.findall(f"{EDM}Property")}
                types[f"{namespace}.{et.get('Name')}"] = (key, props)
            for container in schema.findall(f"{EDM}EntityContainer"):
                sets.extend((str(s.get("Name")), str(s.get("EntityType"))) for s in container.findall(f"{EDM}EntitySet"))
            for group in schema.findall(f"{EDM}Annotations"):  # Target="Namespace.Container/Set" or "Namespace.Type/Property"
                target = str(group.get("Target", ""))
                for note in group.findall(f"{EDM}Annotation"):
                    term, on = note.get("Term"), note.get("Bool", "true") != "false"
                    if term == CONCURRENCY:
                        versioned.add(target.rsplit("/", 1)[-1])
                    elif term in (COMPUTED, COMPUTED_DEFAULT) and on:
                        notes.setdefault(target, set()).add(str(term))
        out = cls()
        for name, type_name in sets:
            if type_name in types:
                key, props = types[type_name]
                props = {n: replace(p, computed=COMPUTED in notes.get(f"{type_name}/{n}", ()),
                                    defaulted=COMPUTED_DEFAULT in notes.get(f"{type_name}/{n}", ()))
                         for n, p in props.items()}
                out.entity_sets[name] = EntitySet(name, key, props, name in versioned)
        return out

    def entity_set(self, name: str) -> EntitySet:
        try:
            return self.entity_sets[name]
        except KeyError:
            raise AppError(f"the OData service has no entity set {name!r}; it has: "
                           f"{', '.join(sorted(self.entity_sets)) or 'none'}") from None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


# -- values ---------------------------------------------------------------------------------------

def from_json(edm_type: str, value: Any) -> Any:
    """A property's JSON value as the Python value the engine compares and writes elsewhere."""
    if value is None:
        return None
    if edm_type == "Edm.DateTimeOffset":
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if edm_type == "Edm.Date":
        return dt.date.fromisoformat(str(value))
    if edm_type == "Edm.TimeOfDay":
        return dt.time.fromisoformat(str(value))
    if edm_type == "Edm.Decimal":
        return Decimal(str(value))
    return value


def to_json(edm_type: str, value: Any) -> Any:
    """A Python value as the property's JSON value."""
    if value is None:
        return None
    if edm_type == "Edm.DateTimeOffset" and isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
        return aware.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):  # as a string: writes say IEEE754Compatible=true, so no digit is lost to a float
        return float(value) if edm_type in ("Edm.Double", "Edm.Single") else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def literal(edm_type: str, value: Any) -> str:
    """A value as a URL literal of its Edm type (a key predicate, a `$filter` operand)."""
    if edm_type in ("Edm.String",):
        return "'" + str(value).replace("'", "''") + "'"
    if edm_type == "Edm.DateTimeOffset" and isinstance(value, dt.datetime):
        return str(to_json(edm_type, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- the service ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One request to make: alone, or as a part of a `$batch`."""

    method: str
    path: str  # relative to the service root
    body: bytes | None
    headers: Mapping[str, str]


def _part(boundary: str, index: int, call: Call) -> bytes:
    """One request of a `$batch`, its URL relative to the batch request's (the service root)."""
    head = [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", f"Content-ID: {index + 1}",
            "", f"{call.method} {call.path} HTTP/1.1", *(f"{k}: {v}" for k, v in call.headers.items()), "", ""]
    return "\r\n".join(head).encode() + (call.body or b"") + b"\r\n"


def _batch_responses(response: httpx.Response) -> list[httpx.Response]:
    """The responses a multipart `$batch` answer holds, in order (parsed with the standard
    library's MIME parser; each part an HTTP response in `application/http`)."""
    envelope = b"Content-Type: " + response.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + response.content
    message = BytesParser(policy=email_policy.HTTP).parsebytes(envelope)
    out = []
    for part in message.iter_parts():
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("iso-8859-1").split("\r\n")
        headers = [tuple(h.split(":", 1)) for h in header_lines if ":" in h]
        out.append(httpx.Response(int(status_line.split()[1]), headers=[(k.strip(), v.strip()) for k, v in headers],
                                  content=body.rstrip(b"\r\n")))
    return out


class ODataService:
    """One OData v4 service root (`apps: crm: {odata: URL}`): its metadata, read once, and its tables."""

    def __init__(self, url: str, auth: httpx.Auth | tuple[str, str] | None = None, headers: Mapping[str, str] | None = None,
                 timeout: float = 30.0, label: str = "the OData service", throttle_seconds: float = 120.0,
                 limiter: Limiter | None = None, metadata: Metadata | None = None, batching: bool = True,
                 batch_size: int = 100) -> None:
        self.url = url.rstrip("/") + "/"
        parsed = httpx.URL(self.url)
        self.shown = str(parsed.copy_with(username=parsed.username, password="***")) if parsed.password else self.url  # errors print this
        self.limiter = limiter
        self.throttle_seconds = throttle_seconds
        self.label = label
        self.client = httpx.Client(base_url=self.url, auth=auth, timeout=timeout, headers={
            "Accept": "application/json;IEEE754Compatible=true", "OData-Version": "4.0", **(headers or {})})
        self._metadata = metadata  # one already read (by `config check`, say), else read on first use
        self.batching = batching  # writes of several records go as $batch requests (until the service refuses one)
        self.batch_size = batch_size

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; AppUnavailable when the service cannot be reached or fails as a server.

        A throttled answer (429, or 503 with Retry-After) is sent again after the wait the
        service asks for, for up to `throttle_seconds` in all; still throttled then, the request
        raises AppUnavailable, so the job backs off and resumes later and no record fails."""
        retrying = Retrying(retry=retry_if_result(_throttled), wait=_retry_after, stop=stop_after_delay(self.throttle_seconds),
                            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None)
        response = retrying(self._send, method, path, **kwargs)
        if _throttled(response):
            raise AppUnavailable(f"{self.label} at {self.shown}: throttled (HTTP {response.status_code}) for "
                                 f"{self.throttle_seconds:g} s; the job resumes later")
        if response.status_code >= 500 and _message(response) is None:
            raise AppUnavailable(f"{self.label} at {self.shown}: HTTP {response.status_code} on {method} {path}")
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.limiter is not None and not self.limiter.try_acquire(self.label, blocking=True, timeout=self.throttle_seconds):
            raise AppUnavailable(f"{self.label} at {self.shown}: no request allowed by its rate limit for "
                                 f"{self.throttle_seconds:g} s; the job resumes later")
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise AppUnavailable(f"{self.label} at {self.shown}: {type(exc).__name__}: {exc}") from exc

    def each(self, calls: Sequence[Call]) -> list[httpx.Response]:
        """One response per call, in order: several calls go as `$batch` requests of up to
        `batch_size` (each call on its own, outside any change set, so one refusal does not undo
        the others), one call or a service without `$batch` one request each."""
        out: list[httpx.Response] = []
        while len(calls) - len(out) > 1 and self.batching:
            answered = self.batch(calls[len(out):len(out) + self.batch_size])
            if answered is None:  # no $batch here after all: the rest one by one
                break
            out.extend(answered)  # a service that stops at a refusal answers fewer: the rest go again
        return out + [self.request(c.method, c.path, content=c.body, headers=c.headers) for c in calls[len(out):]]

    def batch(self, calls: Sequence[Call]) -> list[httpx.Response] | None:
        """The calls as one multipart `$batch` request (OData 4.0, which Dataverse, SAP and CAP
        take alike): their responses in order, or None if the service has no `$batch`."""
        boundary = f"batch_{uuid.uuid4().hex}"
        payload = b"".join(_part(boundary, i, c) for i, c in enumerate(calls)) + f"--{boundary}--\r\n".encode()
        response = self.request("POST", "$batch", content=payload, headers={
            "Content-Type": f"multipart/mixed;boundary={boundary}", "Accept": "multipart/mixed",
            "Prefer": "odata.continue-on-error"})
        if response.status_code in (404, 405, 501):
            self.batching = False
            return None
        if response.status_code != 200:
            raise AppError(f"{self.label}: $batch answered HTTP {response.status_code}: {_message(response) or response.text[:200]}")
        answers = _batch_responses(response)
        if not answers or len(answers) > len(calls):
            raise AppError(f"{self.label}: $batch answered {len(answers)} response(s) to {len(calls)} request(s)")
        return answers

    def metadata(self) -> Metadata:
        if self._metadata is None:
            response = self.request("GET", "$metadata", headers={"Accept": "application/xml"})
            if response.status_code != 200:
                raise AppError(f"{self.label}: $metadata answered HTTP {response.status_code}: {_message(response) or response.text[:200]}")
            self._metadata = Metadata.parse(response.content)
        return self._metadata

    def table(self, entity_set: str, modified: str | None = None, batch_size: int = 100) -> "ODataTable":
        found = self.metadata().entity_set(entity_set)
        if modified is not None:
            found.property(modified)
        return ODataTable(self, found, modified, batch_size)


class ODataTable:
    """One entity set through the connector contract."""

    def __init__(self, service: ODataService, entity_set: EntitySet, modified: str | None, batch_size: int) -> None:
        self.service = service
        self.entity_set = entity_set
        self.modified = modified
        self.capabilities = Capabilities(versions=entity_set.versioned, batch_size=batch_size)
        if len(entity_set.key) != 1:
            raise AppError(f"entity set {entity_set.name} has a key of {len(entity_set.key)} properties; "
                           "tablesync reaches OData entity sets with a one-property key")
        self.key = entity_set.key[0]
        self.key_type = entity_set.property(self.key).edm_type

    # -- reading --------------------------------------------------------------------------------

    def _record(self, row: Mapping[str, Any], columns: Sequence[str]) -> Record:
        props = self.entity_set.properties
        values = {c: from_json(props[c].edm_type, row.get(c)) for c in columns if c in props}
        return Record(str(row[self.key]), values, row.get("@odata.etag"))

    def _select(self, columns: Sequence[str]) -> str:
        for c in columns:
            self.entity_set.property(c)
        return ",".join(dict.fromkeys([self.key, *([self.modified] if self.modified else []), *columns]))

    def _pages(self, params: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
        """Every page of a query, following `@odata.nextLink`."""
        # spaces as %20: httpx's form encoding writes '+', which OData services read as a plus
        path: str | None = self.entity_set.name + "?" + urlencode(params, quote_via=quote, safe=QUERY_SAFE)
        while path is not None:
            response = self.service.request("GET", path)
            if response.status_code != 200:
                raise AppError(f"{self.service.label}: reading {self.entity_set.name} answered HTTP {response.status_code}: "
                               f"{_message(response) or response.text[:200]}")
            body = response.json()
            yield list(body.get("value", []))
            path = body.get("@odata.nextLink")

    def read_changes(self, columns: Sequence[str], watermark: Any) -> Iterator[ChangePage]:
        """By modified then key, from `watermark` (a modified-on, inclusive: the engine subtracts
        its overlap before); without a modified-on property, every record by key."""
        params = {"$select": self._select(columns)}
        if self.modified is None:
            params["$orderby"] = self.key
            mark = None
        else:
            params["$orderby"] = f"{self.modified},{self.key}"
            mod_type = self.entity_set.property(self.modified).edm_type
            if watermark is not None:
                params["$filter"] = f"{self.modified} ge {literal(mod_type, watermark)}"
            mark = watermark
        for rows in self._pages(params):
            records = [self._record(r, columns) for r in rows]
            if self.modified is not None:
                seen = [r.values.get(self.modified) or from_json(mod_type, row.get(self.modified))
                        for r, row in zip(records, rows)]
                top = max((s for s in seen if s is not None), default=None)
                mark = top if mark is None or (top is not None and top > mark) else mark
            yield ChangePage(records, mark)

    def newest_modified(self) -> Any:
        """The largest modified-on now (None without a modified-on property or a record)."""
        if self.modified is None:
            return None
        params = {"$select": self._select([]), "$orderby": f"{self.modified} desc", "$top": "1"}
        for rows in self._pages(params):
            return from_json(self.entity_set.property(self.modified).edm_type, rows[0].get(self.modified)) if rows else None
        return None

    def read_by_keys(self, keys: Sequence[str], columns: Sequence[str]) -> dict[str, Record]:
        out: dict[str, Record] = {}
        wanted = list(dict.fromkeys(keys))
        for i in range(0, len(wanted), self.capabilities.batch_size):
            part = wanted[i:i + self.capabilities.batch_size]
            # `eq … or eq …`: OData 4.0 (Dataverse has no 4.01 `in`)
            params = {"$select": self._select(columns),
                      "$filter": " or ".join(f"{self.key} eq {literal(self.key_type, k)}" for k in part)}
            for rows in self._pages(params):
                for row in rows:
                    record = self._record(row, columns)
                    out[record.key] = record
        return out

    def find(self, values: Mapping[str, Any], limit: int) -> list[str]:
        """Keys of up to `limit` records whose properties equal `values` (by key)."""
        conditions = [f"{n} eq {literal(self.entity_set.property(n).edm_type, v) if v is not None else 'null'}"
                      for n, v in values.items()]
        params = {"$select": self.key, "$orderby": self.key, "$top": str(limit),
                  **({"$filter": " and ".join(conditions)} if conditions else {})}
        return [str(r[self.key]) for rows in self._pages(params) for r in rows]

    def list_keys(self, key_range: KeyRange) -> Iterator[list[str]]:
        conditions = [f"{self.key} gt {literal(self.key_type, key_range.low)}"] if key_range.low is not None else []
        if key_range.high is not None:
            conditions.append(f"{self.key} le {literal(self.key_type, key_range.high)}")
        params = {"$select": self.key, "$orderby": self.key, **({"$filter": " and ".join(conditions)} if conditions else {})}
        for rows in self._pages(params):
            yield [str(r[self.key]) for r in rows]

    # -- writing --------------------------------------------------------------------------------

    def _body(self, values: Mapping[str, Any]) -> bytes:
        """A write's JSON body; decimals and 64-bit integers go as strings (IEEE754Compatible)."""
        return json.dumps({name: to_json(self.entity_set.property(name).edm_type, v) for name, v in values.items()}).encode()

    def _path(self, key: str) -> str:
        return f"{self.entity_set.name}({literal(self.key_type, key)})"

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> list[WriteResult]:
        responses = self.service.each([Call("POST", self.entity_set.name, self._body(row), WRITE_HEADERS) for row in rows])
        results = []
        for row, response in zip(rows, responses):
            if response.status_code in (200, 201):
                body = response.json() if response.content else {}
                results.append(WriteResult(Outcome.OK, str(body.get(self.key, row.get(self.key))),
                                           body.get("@odata.etag") or response.headers.get("ETag"), status=response.status_code))
            else:
                results.append(_refused(response))
        return results

    def update(self, updates: Sequence[Update]) -> list[WriteResult]:
        # `*` without a version read: the record must exist (a PATCH to a missing key must not create one)
        responses = self.service.each([Call("PATCH", self._path(u.key), self._body(u.values),
                                            {**WRITE_HEADERS, "If-Match": u.version or "*"}) for u in updates])
        results = []
        for u, response in zip(updates, responses):
            if response.status_code in (200, 204):
                version = ((response.json().get("@odata.etag") if response.status_code == 200 and response.content else None)
                           or response.headers.get("ETag"))
                results.append(WriteResult(Outcome.OK, u.key, version, status=response.status_code))
            else:
                results.append(_refused(response, u.key))
        return results

    def delete(self, keys: Sequence[str], versions: Mapping[str, str] | None = None) -> list[WriteResult]:
        versions = versions or {}
        responses = self.service.each([Call("DELETE", self._path(k), None, {"If-Match": versions.get(k) or "*"}) for k in keys])
        results = []
        for key, response in zip(keys, responses):
            if response.status_code in (200, 204, 404) or (response.status_code == 412 and not versions.get(key)):
                # 404 (or, with `*`, 412): already gone, which is what was asked
                results.append(WriteResult(Outcome.OK, key, status=response.status_code))
            else:
                results.append(_refused(response, key))
        return results


def shared_rate(redis_url: str, app: str, per_second: float, namespace: str = "tablesync") -> Limiter:
    """A request rate for `app` that every worker sharing this Redis keeps together: each request
    takes a slot of one bucket in Redis (pyrate-limiter), and waits for one when the rate is used up."""
    import redis

    return Limiter(RedisBucket.init([_rate(per_second)], redis.Redis.from_url(redis_url), f"{namespace}:rate:{app}"))


def local_rate(per_second: float) -> Limiter:
    """A request rate kept by this process alone (no Redis to share it through)."""
    return Limiter(InMemoryBucket([_rate(per_second)]))


def _rate(per_second: float) -> Rate:
    """Whole requests per second, or per ten seconds for a rate below one a second."""
    return Rate(max(1, round(per_second * 10)), Duration.SECOND * 10) if per_second < 1 else Rate(int(per_second), Duration.SECOND)


def _throttled(response: httpx.Response) -> bool:
    return response.status_code == 429 or (response.status_code == 503 and "Retry-After" in response.headers)


def _retry_after(state: RetryCallState) -> float:
    """The wait the service asked for (Retry-After in seconds or as an HTTP date), else 1, 2, 4 … s."""
    response = state.outcome.result() if state.outcome is not None and not state.outcome.failed else None
    value = response.headers.get("Retry-After") if response is not None else None
    if value is not None:
        if value.strip().isdigit():
            return float(value.strip())
        try:
            return max(0.0, (parsedate_to_datetime(value) - dt.datetime.now(dt.timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            pass
    return float(min(2 ** (state.attempt_number - 1), 30))


def _message(response: httpx.Response) -> str | None:
    """The OData error body's message, if the response carries one."""
    try:
        error = response.json().get("error")
    except ValueError:
        return None
    if not isinstance(error, dict):
        return None
    return str(error.get("message") or error.get("code") or "") or None


def _refused(response: httpx.Response, key: str | None = None) -> WriteResult:
    """A write the service did not make: a conflict on a version mismatch, else an error."""
    message = _message(response) or response.text[:500] or f"HTTP {response.status_code}"
    outcome = Outcome.CONFLICT if response.status_code == 412 else Outcome.ERROR
    return WriteResult(outcome, key, message=f"HTTP {response.status_code}: {message}", status=response.status_code)
