"""Operator actions (SPEC §5): what an operator does about a coupled data synchronization error.

Each action is a job, run by a worker under the mapping's lock (so it never races a sync), with
its preconditions checked here against the live records, not only in the CLI. A coupling that
fails its precondition gets a job error saying why and what to do instead, the others are still
acted on, and the job ends `failed` so `--wait` exits 1.

Redelivery: every step is idempotent, and a step this job already took (the coupling carries its
job id) is not refused on the redo: a restore whose insert landed, or a delete whose record is gone,
is finished instead of being reported as a broken precondition.

An action's own steps (clearing a skip, removing or making a coupling) are single store
statements (`store.couplings`); the records it then syncs go through the run's ordinary stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tablesync.apps.tables import Table
from tablesync.config.model import MappingSpec, source_side, target_side
from tablesync.errors import ActionRefused, RecordError
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.store.journal import RecordRef
from tablesync.sync.context import RunContext
from tablesync.sync.matching import NONE, counterparts, match_key
from tablesync.sync.one_way import process_rows
from tablesync.sync.plan import DirectionPlan, compile_one_way, compile_pair_plan, compile_plan, target_values
from tablesync.sync.record import Batch, record
from tablesync.sync.two_way import resolve_pairs, sync_batch

ACTION_KINDS = ("retry", "resolve", "uncouple", "restore", "delete", "couple", "match")
SIDES = ("local", "integration")


@dataclass(frozen=True)
class Pair:
    id: int
    local_key: str | None
    integration_key: str | None
    state: str
    skipped: bool
    last_job_id: int | None
    origin: str | None = None

    def key(self, side: str) -> str | None:
        return self.local_key if side == "local" else self.integration_key


def run_action(ctx: RunContext, spec: MappingSpec, tables: dict[str, Table], kind: str,
               params: dict[str, Any]) -> tuple[Counters, str | None]:
    """Carry out one action job; returns its counters and a summary for the job's message."""
    act = Action(ctx, spec, tables, params.get("redo_of"))
    if kind == "couple":
        act.couple(str(params["local_key"]), str(params["integration_key"]), params.get("use"))
    elif kind == "match":
        act.match(params.get("use"))
    else:
        pairs = act.load([int(i) for i in params.get("couplings", [])])
        if kind == "retry":
            act.retry(pairs, now=bool(params.get("now")))
        elif kind == "resolve":
            act.resolve(pairs, use=str(params["use"]))
        else:
            getattr(act, kind)(pairs)
    return act.finish(), act.summary


def sync_record(ctx: RunContext, spec: MappingSpec, tables: dict[str, Table], key: str, side: str) -> Counters:
    """`sync MAPPING --record KEY`: one record, now, as a run would sync it."""
    act = Action(ctx, spec, tables)
    try:
        side, key = record_source(ctx, spec, tables, key, side)
    except ActionRefused as exc:
        act.refuse(None, None, str(exc))
        return act.finish()
    act.synced.add(act.sync_keys(side, [key]))
    return act.finish()


def record_source(ctx: RunContext, spec: MappingSpec, tables: dict[str, Table], key: str, side: str) -> tuple[str, str]:
    """The (side, key) a run reads the record `key` of `side` from: a one-way mapping's target
    record is synced from its coupled source record. Refused when there is no such live record."""
    if spec.direction != "bidirectional" and side != source_side(spec.direction):
        with ctx.store.connect() as conn:  # given by its target key: sync it from its coupled source record
            found = cs.counterpart_key(conn, spec.name, side, key)
        if found is None:
            raise ActionRefused(f"{side} record {key} is not coupled, and mapping {spec.name} only reads its "
                                f"{source_side(spec.direction)} side: give the {source_side(spec.direction)} key")
        key, side = found, source_side(spec.direction)
    if not tables[side].existing([key]):
        raise ActionRefused(f"{side} record {key} does not exist (or is soft-deleted) in {tables[side].side.table}")
    return side, key


class Action:
    """One action job's state: what it did (counters, events) and what it refused."""

    def __init__(self, ctx: RunContext, spec: MappingSpec, tables: dict[str, Table], redo_of: int | None = None) -> None:
        self.ctx, self.spec, self.tables = ctx, spec, tables
        self.mine = {ctx.job_id} | ({int(redo_of)} if redo_of is not None else set())  # jobs whose steps are ours
        self.direction = "to_integration" if spec.direction == "bidirectional" else spec.direction
        self.batch = Batch(ctx.job_id, spec.name, self.direction)  # what the action itself did; recorded by finish()
        self.claimed: set[tuple[str, str]] = set()  # (side, key) of the records the match action coupled in this job
        self.counters = self.batch.counters
        self.synced = Counters()  # what the sync steps it ran did; they record their own batches
        self.summary: str | None = None

    # -- bookkeeping ---------------------------------------------------------------------------

    def ref(self, p: Pair | None, local_key: str | None = None, integration_key: str | None = None) -> RecordRef:
        return RecordRef.oriented(self.ctx.job_id, self.spec.name, self.direction, p.id if p else None,
                                  p.local_key if p else local_key, p.integration_key if p else integration_key)

    def event(self, p: Pair, outcome: str, message: str | None = None) -> None:
        self.batch.event(self.ref(p), outcome, message)

    def refuse(self, p: Pair | None, keys: tuple[str, str] | None, message: str) -> None:
        ref = self.ref(p, *(keys or (None, None)))
        self.batch.refusals.append((ref, message))
        self.batch.event(ref, "refused", message)

    def finish(self) -> Counters:
        refused = self.batch.refusals
        self.counters.failed += len(refused)
        record(self.ctx, self.batch)
        if refused:
            first = refused[0][1]
            more = f" (and {len(refused) - 1} more; see the job's errors)" if len(refused) > 1 else ""
            raise ActionRefused(first + more)
        total = Counters()
        total.add(self.counters)
        total.add(self.synced)
        return total

    def load(self, ids: Sequence[int]) -> list[Pair]:
        with self.ctx.store.connect() as conn:
            rows = cs.by_ids(conn, self.spec.name, ids)
        pairs = []
        for i in ids:
            r = rows.get(i)
            if r is None:
                self.batch.refusals.append((self.ref(None), f"coupling {i} does not exist in mapping {self.spec.name} "
                                                            "(removed, or another mapping's)"))
                continue
            pairs.append(Pair(r.id, r.local_key, r.integration_key, r.state, r.skipped, r.last_job_id, r.origin))
        return pairs

    def existence(self, pairs: Sequence[Pair]) -> dict[int, tuple[bool, bool]]:
        found = {side: self.tables[side].existing([k for p in pairs if (k := p.key(side))]) for side in SIDES}
        return {p.id: (p.local_key in found["local"], p.integration_key in found["integration"]) for p in pairs}

    def sync_keys(self, side: str, keys: list[str]) -> Counters:
        """Sync these records now, reading them on `side` (a one-way mapping's source side)."""
        if not keys:
            return Counters()
        local, integration = self.tables["local"], self.tables["integration"]
        if self.spec.direction == "bidirectional":
            return sync_batch(self.ctx, compile_pair_plan(self.spec, local.table, integration.table), side, self.tables, keys)
        plan = compile_one_way(self.spec, local.table, integration.table)
        source = self.tables[source_side(plan.direction)]
        rows = source.fetch(keys, plan.source_columns)
        return process_rows(self.ctx, plan, source, self.tables[target_side(plan.direction)], list(rows.values()))

    def resolve_now(self, local_keys: list[str], winner: str) -> Counters:
        plan = compile_pair_plan(self.spec, self.tables["local"].table, self.tables["integration"].table)
        return resolve_pairs(self.ctx, plan, self.tables, local_keys, winner)

    def origin_of(self, p: Pair) -> str:
        if p.origin:
            return p.origin
        return "local" if self.spec.direction != "from_integration" else "integration"

    def both_exist(self, pairs: list[Pair], action: str) -> list[Pair]:
        live = self.existence(pairs)
        ok = []
        for p in pairs:
            if p.state == "uncoupled":
                self.refuse(p, None, f"coupling {p.id} was removed (uncoupled); couple the records again with `tablesync couple`")
            elif all(live[p.id]):
                ok.append(p)
            elif p.state == "pending" and live[p.id][SIDES.index(self.origin_of(p))]:
                ok.append(p)  # a record that failed before it was ever inserted: only its source must exist
            else:
                gone = " and ".join(f"the {s} record {p.key(s)}" for s, there in zip(SIDES, live[p.id]) if not there)
                self.refuse(p, None, f"cannot {action} coupling {p.id}: {gone} no longer exists; use `tablesync restore` "
                                     "or `tablesync delete` for a deleted record, or `tablesync uncouple`")
        return ok

    # -- the actions ----------------------------------------------------------------------------

    def retry(self, pairs: list[Pair], now: bool = False) -> None:
        ok = self.both_exist(pairs, "retry")
        with self.ctx.write() as conn:
            cs.clear_skip(conn, self.ctx.job_id, [p.id for p in ok])
        for p in ok:
            self.event(p, "retried", "skip cleared by an operator; synced " + ("now" if now else "in the next run"))
        if now:
            side = "local" if self.spec.direction == "bidirectional" else source_side(self.spec.direction)
            self.synced.add(self.sync_keys(side, [k for p in ok if (k := p.key(side))]))

    def resolve(self, pairs: list[Pair], use: str) -> None:
        if self.spec.direction != "bidirectional" and use != source_side(self.spec.direction):
            source = source_side(self.spec.direction)  # the side a one-way mapping never writes to
            for p in pairs:
                self.refuse(p, None, f"mapping {self.spec.name} flows {self.spec.direction}: its {source} records are never "
                                     f"written to, so the {use} values cannot win; use --use {source}, or change the "
                                     f"record in the {source} app and `tablesync retry`")
            return
        ok = self.both_exist(pairs, "synchronize")
        with self.ctx.write() as conn:
            cs.clear_skip(conn, self.ctx.job_id, [p.id for p in ok])
        for p in ok:
            self.event(p, "resolved", f"an operator chose the {use} values")
        if self.spec.direction == "bidirectional":
            self.synced.add(self.resolve_now([k for p in ok if (k := p.local_key)], use))
        else:
            self.synced.add(self.sync_keys(use, [k for p in ok if (k := p.key(use))]))

    def uncouple(self, pairs: list[Pair]) -> None:
        todo = [p for p in pairs if p.state != "uncoupled"]
        with self.ctx.write() as conn:
            cs.uncouple(conn, self.ctx.job_id, [p.id for p in todo])
        for p in todo:
            self.event(p, "uncoupled", "coupling removed by an operator: the records are no longer synced")
        self.counters.uncoupled += len(todo)

    def _one_deleted(self, pairs: list[Pair], action: str) -> list[tuple[Pair, str]]:
        """(pair, surviving side) for pairs with exactly one record deleted, or already handled by this job."""
        live = self.existence(pairs)
        out = []
        for p in pairs:
            here = [s for s, there in zip(SIDES, live[p.id]) if there]
            mine = p.last_job_id in self.mine
            if mine and (p.state == "pending" or not here):
                out.append((p, self.origin_of(p) if p.state == "pending" else (here[0] if here else "")))
            elif len(here) == 1 and p.state != "uncoupled":
                out.append((p, here[0]))
            elif len(here) == 2:
                self.refuse(p, None, f"cannot {action} coupling {p.id}: both records exist, so there is no deletion "
                                     "to settle; use `tablesync resolve --use local|integration` or `tablesync retry`")
            else:
                self.refuse(p, None, f"cannot {action} coupling {p.id}: both records are gone; `tablesync uncouple` it")
        return out

    def restore(self, pairs: list[Pair]) -> None:
        todo: dict[str, list[Pair]] = {"local": [], "integration": []}
        for p, survivor in self._one_deleted(pairs, "restore"):
            if p.state == "pending":  # redo: the intent is there already
                todo[survivor].append(p)
                continue
            if self.spec.direction != "bidirectional" and survivor != source_side(self.spec.direction):
                lost = source_side(self.spec.direction)
                self.refuse(p, None, f"cannot restore the {lost} record {p.key(lost)}: mapping {self.spec.name} flows "
                                     f"{self.spec.direction} and never writes {lost} records; use `tablesync delete` "
                                     "to delete the surviving record, or `tablesync uncouple`")
                continue
            todo[survivor].append(p)
        for survivor, items in todo.items():
            if not items:
                continue
            lost = "integration" if survivor == "local" else "local"
            with self.ctx.write() as conn:
                cs.reopen(conn, [p.id for p in items], lost, survivor, job_id=self.ctx.job_id)
            for p in items:
                self.event(p, "restoring", f"an operator restores the deleted {lost} record from the {survivor} record")
            self.synced.add(self.sync_keys(survivor, [k for p in items if (k := p.key(survivor))]))

    def delete(self, pairs: list[Pair]) -> None:
        for p, survivor in self._one_deleted(pairs, "delete"):
            if survivor and p.state != "pending":
                self.tables[survivor].delete_keys([str(p.key(survivor))])
                self.counters.deleted += 1
            with self.ctx.write() as conn:
                cs.forget(conn, [p.id])
            self.event(p, "deleted", f"an operator deleted the surviving {survivor} record and the coupling" if survivor
                       else "an operator deleted the coupling (both records are gone)")

    def couple(self, local_key: str, integration_key: str, use: str | None) -> None:
        keys = (local_key, integration_key)
        with self.ctx.store.connect() as conn:
            rows = cs.touching(conn, self.spec.name, local_key, integration_key)
        done = [r for r in rows if r.local_key == local_key and r.integration_key == integration_key
                and r.state == "synced" and r.last_job_id in self.mine]
        if not done:
            live = [bool(self.tables[s].existing([k])) for s, k in zip(SIDES, keys)]
            if not all(live):
                gone = " and ".join(f"the {s} record {k}" for s, k, there in zip(SIDES, keys, live) if not there)
                self.refuse(None, keys, f"cannot couple: {gone} does not exist (or is soft-deleted)")
                return
            busy = [r for r in rows if r.state != "uncoupled"]
            if busy:  # each record's coupling, in id order: the message is the same however the store returns them
                taken = "; ".join(f"coupling {r.id} already couples local {r.local_key} with integration {r.integration_key}"
                                  for r in busy)
                self.refuse(None, keys, f"cannot couple: {taken}; `tablesync uncouple {' '.join(str(r.id) for r in busy)}` first")
                return
            with self.ctx.write() as conn:  # tombstones of either record give way to the new pair
                cs.forget(conn, [r.id for r in rows])
                new_id = cs.insert_synced(conn, self.spec.name, self.ctx.job_id, [keys])[0]
        else:
            new_id = done[0].id
        p = Pair(new_id, local_key, integration_key, "synced", False, self.ctx.job_id)
        self.counters.coupled += 1
        self.event(p, "coupled", "coupled by an operator" + (f"; the {use} values win" if use else ""))
        self._first_sync([p], use)

    def match(self, use: str | None) -> None:
        """Couple every uncoupled record to its single match_on counterpart (`matching`): from the
        source side, and on a bidirectional mapping then from the integration side too (records
        the local side could not see, through its filter, say)."""
        plans = [compile_plan(self.spec, d, self.tables[target_side(d)].table, self.tables[source_side(d)].table)
                 for d in self.spec.directions()]
        if not plans[0].match_columns:
            self.refuse(None, None, f"mapping {self.spec.name} has no match_on fields: add `match_on: [...]` to it")
            return
        tally: dict[str, set[tuple[str, str]]] = {"unmatched": set(), "ambiguous": set()}  # (side, key): a record counts once, whichever pass saw it
        for plan in plans:
            self._match_from(plan, use, tally)
        self.summary = (f"coupled {self.counters.coupled}, unmatched {len(tally['unmatched'] - tally['ambiguous'])}, "
                        f"ambiguous {len(tally['ambiguous'])}")

    def _match_from(self, plan: DirectionPlan, use: str | None, tally: dict[str, set[tuple[str, str]]]) -> None:
        src, tgt = plan.source_side(), plan.target_side()
        for page in self.tables[src].pages(plan.source_columns, None, self.ctx.batch_size):
            with self.ctx.store.connect() as conn:
                known = cs.by_source_keys(conn, self.spec.name, plan.direction, [plan.source_key(r) for r in page])
            wanted: dict[str, Any] = {}
            for row in page:
                key = plan.source_key(row)
                if key in known:
                    continue
                try:
                    wanted[key] = match_key(plan, target_values(plan, row))
                except RecordError:
                    tally["unmatched"].add((src, key))
            found = counterparts(self.ctx.store, plan, self.tables[src], self.tables[tgt],
                                 {k: v for k, v in wanted.items() if v is not None})
            new: list[tuple[str, str]] = []
            absorbed: list[str] = []  # target records coupled now whose own coupling only tracked a failed match
            for key in wanted:
                candidates = found.get(key, NONE)
                why = candidates.ambiguity(", ".join(plan.match_columns), src, tgt)
                if not candidates.all:
                    tally["unmatched"].add((src, key))
                elif why is not None:
                    tally["ambiguous"].add((src, key))
                    pair = (key, "") if src == "local" else ("", key)
                    self.batch.event(self.ref(None, *pair), "ambiguous", why)
                elif (tgt, candidates.all[0]) in self.claimed:
                    tally["ambiguous"].add((src, key))
                else:
                    self.claimed.add((tgt, candidates.all[0]))
                    absorbed.extend(candidates.waiting)
                    new.append((key, candidates.all[0]) if src == "local" else (candidates.all[0], key))
            if new:
                with self.ctx.write() as conn:
                    cs.drop_waiting(conn, self.spec.name, plan.direction, absorbed)
                    ids = cs.insert_synced(conn, self.spec.name, self.ctx.job_id, new)
                pairs = [Pair(i, lk, ik, "synced", False, self.ctx.job_id) for i, (lk, ik) in zip(ids, new)]
                for p in pairs:
                    self.event(p, "coupled", f"coupled by match_on ({', '.join(plan.match_columns)})")
                self.counters.coupled += len(pairs)
                self._first_sync(pairs, use)
            self.ctx.beat()

    def _first_sync(self, pairs: list[Pair], use: str | None) -> None:
        if use is not None and self.spec.direction == "bidirectional":
            self.synced.add(self.resolve_now([k for p in pairs if (k := p.local_key)], use))
            return
        side = "local" if self.spec.direction == "bidirectional" else source_side(self.spec.direction)
        self.synced.add(self.sync_keys(side, [k for p in pairs if (k := p.key(side))]))
