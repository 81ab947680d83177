"""`hrdv dead-letters`: what is in hrdv.dead_letters, and replaying it through parsing after a fix.

A replay sends the selected dead letters of each entity, with their original Kafka coordinates,
into the entity's intake table (hrdv.<entity>_intake), where the live stream enters parsing too:
the same views send each message to the buffer or back to the dead letters. Each replay is
recorded first in hrdv.dead_letter_replays (coordinates, previous reason, outcome and current
reason, from the same rule the views apply), then routed, checked against that record, and the
messages that parsed are deleted from hrdv.dead_letters. Replaying again is harmless: parsed
messages are gone from the dead letters (and the buffer collapses duplicates by LSN anyway);
the still failing come back with the same reason.

    hrdv dead-letters summary
    hrdv dead-letters list [--topic T] [--reason R] [--since ISO] [--limit N]
    hrdv dead-letters replay [--topic T] [--reason R] [--since ISO] [--dry-run]

An unknown --topic or --reason is an error that names the known ones.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from string import Template

import click
from clickhouse_connect.driver.client import Client

from hrdv import clickhouse
from hrdv.entities import BY_NAME, HEARTBEAT_TABLE
from hrdv.ingest import QUEUES
from hrdv.settings import load
from hrdv.sql import sql_text

SAMPLE_BYTES = 120
PREVIEW_BYTES = 80
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay takes: all of an entity's topic unless narrowed."""

    reason: str = ""  # '' = any
    since: datetime = EPOCH


@dataclass(frozen=True)
class ReplayResult:
    replay_id: str
    entity: str
    topic: str
    rows: list[tuple[str, str, str, int]]  # (previous reason, outcome, reason, messages)

    def count(self, outcome: str) -> int:
        return sum(n for _, o, _, n in self.rows if o == outcome)


def _query(name: str, **parts: str) -> str:
    """sql/clickhouse/queries/<name> with ${...} filled by SQL parts (entity names, sub-queries:
    code, never user input; user values travel as server-side parameters)."""
    return Template(sql_text(f"clickhouse/queries/{name}")).substitute(parts)


def entity_topics() -> dict[str, str]:
    """Debezium topic -> entity, for every entity with an intake."""
    settings = load()
    return {settings.topic(entity): entity for entity in QUEUES}


def parsed_topics() -> list[str]:
    """Every topic whose messages can become dead letters: the entities' and the heartbeat's."""
    return [*entity_topics(), load().topic(HEARTBEAT_TABLE)]


def reasons(client: Client, topics: Sequence[str], since: datetime = EPOCH) -> dict[str, int]:
    """Dead letters of `topics` received at or after `since`, by reason."""
    rows = client.query(sql_text("clickhouse/queries/dead_letters_reasons.sql"),
                        parameters={"topics": list(topics), "since": since}).result_rows
    return dict(rows)


def check_reason(client: Client, topics: Sequence[str], reason: str) -> dict[str, int]:
    """The dead letters of `topics` by reason; a `reason` none of them has is a usage error that
    names the reasons there are."""
    present = reasons(client, topics)
    if reason and reason not in present:
        known = ", ".join(f"{name!r} ({count})" for name, count in present.items()) or "none (no dead letters)"
        raise click.BadParameter(f"no dead letter of {', '.join(topics)} has reason {reason!r}; "
                                 f"reasons there are: {known}", param_hint="--reason")
    return present


def safe_preview(text: str, size: int, shown: int = PREVIEW_BYTES) -> str:
    """A message's start for a terminal: control characters escaped, '…' when cut short."""
    visible = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return visible + ("…" if size > shown else "")


def _parameters(topic: str, selection: Selection, started: datetime, replay_id: str = "") -> dict:
    return {"topic": topic, "reason": selection.reason, "since": selection.since,
            "started": started, "replay_id": replay_id or str(uuid.UUID(int=0))}


def _now(client: Client) -> datetime:
    # ClickHouse's clock: the views stamp received_at with it, and replays compare against it.
    return client.query("SELECT now64(3, 'UTC')").result_rows[0][0].replace(tzinfo=timezone.utc)


def _outcomes(entity: str) -> str:
    """The replay's rule for an entity's dead letters, as a sub-query (the views' functions)."""
    return _query("dead_letter_replay_outcomes.sql", entity=entity, key=BY_NAME[entity].key)


def predict(client: Client, entity: str, topic: str, selection: Selection) -> list[tuple]:
    """(previous reason, outcome, reason, messages) a replay would give, without replaying."""
    rows = client.query(_query("dead_letter_replay_prediction.sql", outcomes=_outcomes(entity)),
                        parameters=_parameters(topic, selection, _now(client))).result_rows
    return [tuple(row) for row in rows]


def replay(client: Client, entity: str, topic: str, selection: Selection) -> ReplayResult:
    """Record, route, verify and clean up one replay of an entity's dead letters."""
    replay_id = str(uuid.uuid4())
    parameters = _parameters(topic, selection, _now(client), replay_id)
    client.command(_query("dead_letter_replays_insert.sql", outcomes=_outcomes(entity)), parameters=parameters)
    client.command(_query("dead_letter_replay_route.sql", entity=entity), parameters=parameters)
    mismatches = client.query(_query("dead_letter_replay_mismatches.sql"),
                              parameters=parameters).result_rows[0][0]
    if mismatches:
        raise RuntimeError(f"replay {replay_id}: {mismatches} message(s) did not go where the rule "
                           "said; did the schema change meanwhile? Nothing was deleted.")
    client.command(_query("dead_letters_delete_parsed.sql"), parameters=parameters)
    rows = client.query(_query("dead_letter_replay_summary.sql"), parameters=parameters).result_rows
    return ReplayResult(replay_id, entity, topic, [tuple(row) for row in rows])


# --- the command line ----------------------------------------------------------------------------
def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime:
    if value is None:
        return EPOCH
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or time, e.g. 2026-11-24 or "
                                 "2026-11-24T10:00:00+03:00 (UTC if no offset)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _topics(topic: str | None, known: Sequence[str]) -> list[str]:
    if topic is None:
        return list(known)
    if topic not in known:
        raise click.BadParameter(f"{topic!r} is not a topic HRDV parses; known: {', '.join(known)}",
                                 param_hint="--topic")
    return [topic]


def _print_outcomes(rows: Sequence[tuple]) -> None:
    for previous, outcome, reason, messages in rows:
        now = "" if outcome == "parsed" else f" ({reason})"
        click.echo(f"  {messages:>8}  {previous:<36} -> {outcome}{now}")


@click.group("dead-letters")
def dead_letters() -> None:
    """Messages that could not be parsed (hrdv.dead_letters): list them, replay them after a fix."""


TOPIC_OPTION = click.option("--topic", default=None,
                            help="only this topic (default: every topic HRDV parses)")
REASON_OPTION = click.option("--reason", default="", help="only dead letters with exactly this reason")
SINCE_OPTION = click.option("--since", callback=_since, default=None,
                            help="only dead letters received at or after this ISO time (UTC if no offset)")


@dead_letters.command("list")
@TOPIC_OPTION
@REASON_OPTION
@SINCE_OPTION
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="show at most this many, newest first")
def list_dead_letters(topic: str | None, reason: str, since: datetime, limit: int) -> None:
    """The dead letters themselves, newest first: where each came from (topic, partition,
    offset), why it was refused, its size, key and the start of the message."""
    dsn = load().clickhouse_dsn
    topics = _topics(topic, parsed_topics())
    with clickhouse.session(dsn) as client:
        check_reason(client, topics, reason)
        matching = reasons(client, topics, since)
        total = matching.get(reason, 0) if reason else sum(matching.values())
        rows = client.query(sql_text("clickhouse/queries/dead_letters_listed.sql"), parameters={
            "topics": topics, "reason": reason, "since": since, "limit": limit,
            "preview_bytes": PREVIEW_BYTES}).result_rows
    if not rows:
        click.echo(f"no dead letters match in {dsn}")
        return
    click.echo(f"{total} dead letter(s) match in {dsn}; the newest {len(rows)}:\n")
    click.echo(f"{'received (UTC)':<19}  {'topic':<28} {'part':>4} {'offset':>9}  {'reason':<30} "
               f"{'bytes':>7}  key / message")
    for received, name, partition, offset, why, size, key, preview in rows:
        click.echo(f"{received:%Y-%m-%d %H:%M:%S}  {name:<28} {partition:>4} {offset:>9}  {why:<30} "
                   f"{size:>7}  {safe_preview(key, len(key)) or '(null key)'} / "
                   f"{safe_preview(preview, size)}")


@dead_letters.command("summary")
def summarise_dead_letters() -> None:
    """Dead letters by topic and reason: how many, oldest and newest, a sample of each."""
    dsn = load().clickhouse_dsn
    with clickhouse.session(dsn) as client:
        rows = client.query(sql_text("clickhouse/queries/dead_letters_by_reason.sql"),
                            parameters={"sample_bytes": SAMPLE_BYTES}).result_rows
    if not rows:
        click.echo(f"no dead letters in {dsn}")
        return
    click.echo(f"{sum(r[2] for r in rows)} dead letter(s) in {dsn}\n")
    click.echo(f"{'topic':<28} {'reason':<36} {'messages':>8}  {'oldest (UTC)':<19}  newest (UTC)")
    for topic, reason, messages, oldest, newest, partition, offset, sample in rows:
        click.echo(f"{topic:<28} {reason:<36} {messages:>8}  {oldest:%Y-%m-%d %H:%M:%S}  "
                   f"{newest:%Y-%m-%d %H:%M:%S}")
        click.echo(f"    e.g. partition {partition} offset {offset}: {sample!r}")


@dead_letters.command("replay")
@TOPIC_OPTION
@REASON_OPTION
@SINCE_OPTION
@click.option("--dry-run", is_flag=True, help="show what a replay would do; change nothing")
def replay_dead_letters(topic: str | None, reason: str, since: datetime, dry_run: bool) -> None:
    """Send dead letters of the entities' topics through parsing again, e.g. after a parser fix
    or a raised limit (heartbeat dead letters are evidence only: nothing replays them)."""
    selection = Selection(reason=reason, since=since)
    known = entity_topics()
    topics = _topics(topic, list(known))
    with clickhouse.session(load().clickhouse_dsn) as client:
        check_reason(client, topics, reason)
        for name, entity in ((name, known[name]) for name in topics):
            if dry_run:
                rows = predict(client, entity, name, selection)
                click.echo(f"{name}: would replay {sum(r[3] for r in rows)} dead letter(s) (dry run)")
                _print_outcomes(rows)
                continue
            result = replay(client, entity, name, selection)
            click.echo(f"{name}: replayed {result.count('parsed') + result.count('still failing')} "
                       f"dead letter(s): {result.count('parsed')} parsed into hrdv.{entity}_buffer, "
                       f"{result.count('still failing')} still failing (replay {result.replay_id})")
            _print_outcomes(result.rows)
