"""The index's SQL on the C-STORE hot path: one call per write path.

- `write_known`: a further instance of a series this process has stored before, in one
  round trip that is also the commit (autocommit PostgreSQL).
- `write_series`: several spooled instances of one such series, in one round trip.
- `write_careful`: the careful path's rows, inside the caller's transaction, after
  `lock_and_find` has serialised stores of the SOP Instance UID (`fresh`: a study and
  series `parents_absent` found new, created first).
- `write_new`: the first instances of several series new to the index, each of another
  study (the spool's batches of new studies), a statement per table for all of them.
- `parents_absent`: whether a study and series are new to the index (read only).

Plain SQL through Django's connection, a handful of statements per instance: on the
C-STORE path the ORM's query building cost more than the database itself. PostgreSQL and
SQLite both speak INSERT/UPDATE ... RETURNING and ON CONFLICT, so there is one path for
both. The common case (a further instance of a known series) is: lock and look up the SOP
Instance UID, read the patient, bump the study and the series, insert the instance with
its audit event; PostgreSQL gets the first two and the last two in one round trip each.
On PostgreSQL each session prepares these statements once (alliance.prepared; a batch's up to
PREPARED_ROWS rows): parsing and planning them had cost the database more than running them.
The audit events' INSERT comes from alliance.audit (its one writer). Table and column
names in the SQL come from the models' metadata, never from input; every value is a bound
parameter (hence the S608 exemptions below, the only ones of the store).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from alliance import audit, prepared
from alliance.models import AuditEvent, Institution
from imaging.dicom.datasets import Attributes
from imaging.models import Instance, Patient, Series, Study
from imaging.received import IngestError, IngestResult, Received, uid_conflict

_LOCK_NAMESPACE = 3_000_003  # pg_advisory_xact_lock(namespace, hashtext(SOP Instance UID))

# A batch's statements are written for its number of rows, and each size's plan kept by a session
# costs it memory (about 12 kB a row for each of the four such texts): up to this many rows they
# are prepared (alliance.prepared), larger batches only executed. Preparing cut PostgreSQL's CPU
# per new study in batches of four from 0.64 to 0.37 ms (bench/index_cost.py, bench/RESULTS.md).
PREPARED_ROWS = 16


def write_known(
    received: Received,
    key: str,
    known: tuple[int, int, int],
    institution: Institution,
    *,
    actor: audit.Actor,
    via: str,
    source: str,
    durable: Callable[[], None],
) -> IngestResult:
    """The counters, the audit event and the instance row as one simple query, which
    PostgreSQL runs as one implicit transaction: committed on return. `durable()` is called
    just before it is sent (the file must be durable first); an IntegrityError means a
    duplicate SOP Instance UID or a parent deleted since, and nothing was written."""
    a = received.attributes
    study, series = _remembered_parents(known, a, institution)
    received.digest()
    statements = _bumps(study.pk, series.pk, received.size, timezone.now())
    instance, rows = _instance_rows(received, key, study, series, actor=actor, via=via, source=source)
    durable()
    with connection.cursor() as cursor:
        instance.pk = int(_execute_all(cursor, statements + rows)[0])
    series.study = study
    return IngestResult(instance=instance, created=True, study=study, series=series)


def write_series(
    received: Sequence[Received],
    keys: Sequence[str],
    known: tuple[int, int, int],
    institution: Institution,
    *,
    actor: audit.Actor,
    via: str,
    source: str,
) -> list[IngestResult]:
    """write_known for several instances of one series (their files durable), in one round trip
    that is also the commit: the counters bumped once, every audit event and instance row."""
    study, series = _remembered_parents(known, received[0].attributes, institution)
    statements = _bumps(study.pk, series.pk, sum(r.size for r in received), timezone.now(), count=len(received))
    instances = []
    events = []
    for r, key in zip(received, keys, strict=True):
        instance, event = _instance_and_event(r, key, study.patient_id, series, actor=actor, via=via, source=source)
        instances.append(instance)
        events.append(event)
    statements.append(audit.insert_prepared(events))
    instance_sql, instance_params = _insert_instances_sql(instances)
    statements.append((f"{instance_sql} RETURNING id, sop_uid", instance_params))
    with connection.cursor() as cursor:
        prepared.execute(cursor, statements, prepare=len(received) <= PREPARED_ROWS)
        ids = dict((sop_uid, pk) for pk, sop_uid in cursor.fetchall())
    series.study = study
    for instance in instances:
        instance.pk = ids[instance.sop_uid]
    return [IngestResult(instance=instance, created=True, study=study, series=series) for instance in instances]


def committed_rows(sop_uids: Sequence[str]) -> dict[str, tuple[int, str]]:
    """The instance rows of these SOP Instance UIDs: uid -> (primary key, storage key)."""
    rows = Instance.objects.filter(sop_uid__in=sop_uids).values_list("sop_uid", "pk", "storage_key")
    return {uid: (pk, key) for uid, pk, key in rows}


def parents_absent(a: Attributes) -> bool:
    """Whether neither the Study nor the Series Instance UID of `a` is anywhere in the index:
    one read-only query, no lock and no commit (the caller's autocommit connection runs it as
    its own snapshot). Then the careful path could refuse the instance only for a parallel
    store of the same UIDs or for its SOP Instance UID (imaging.ingest._spooled)."""
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM {_table(Study)} WHERE study_uid = %s)"  # noqa: S608
        f" OR EXISTS (SELECT 1 FROM {_table(Series)} WHERE series_uid = %s)"
    )
    with connection.cursor() as cursor:
        prepared.execute(cursor, [(sql, [a.study_uid, a.series_uid])])
        row = cursor.fetchone()
    return not row[0]


def lock_and_find(sop_uid: str) -> int | None:
    """Serialise stores of one SOP Instance UID until commit, then the primary key of the
    instance already stored under it, if any. (SQLite's IMMEDIATE transactions already
    serialise all writers; on PostgreSQL the lock and the look-up are one round trip.)"""
    find = f"SELECT id FROM {_table(Instance)} WHERE sop_uid = %s"  # noqa: S608
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT pg_advisory_xact_lock(%s, hashtext(%s)); {find}", [_LOCK_NAMESPACE, sop_uid, sop_uid]
            )
        else:
            cursor.execute(find, [sop_uid])
        row = cursor.fetchone()
    return None if row is None else int(row[0])


_LOCK_MANY = "SELECT count(pg_advisory_xact_lock(%s, hashtext(u))) FROM (SELECT unnest(%s::text[]) AS u ORDER BY 1) x"


def lock_and_find_many(sop_uids: Sequence[str]) -> set[str]:
    """lock_and_find for several UIDs (PostgreSQL, inside the caller's transaction): each UID's
    lock taken in one order (no two stores deadlock), then those already stored, in one
    round trip."""
    ordered = sorted(set(sop_uids))
    find = f"SELECT sop_uid FROM {_table(Instance)} WHERE sop_uid = ANY(%s)"  # noqa: S608
    with connection.cursor() as cursor:
        prepared.execute(cursor, [(_LOCK_MANY, [_LOCK_NAMESPACE, ordered]), (find, [ordered])])
        return {row[0] for row in cursor.fetchall()}


def lock_new(received: Sequence[Received], institution: Institution) -> tuple[set[str], list[Any]]:
    """For write_new, in one round trip (PostgreSQL, inside the caller's transaction): each SOP
    Instance UID's lock taken as lock_and_find_many takes them, then those already stored, and
    the patients of the files (issuer `institution`) read, or created with the values of
    their first file in the batch. When some are stored, the caller rolls back (the patients
    created with them go too)."""
    ordered = sorted({r.attributes.sop_uid for r in received})
    rows, params = _patient_rows(received)
    stored = f"SELECT NULL, sop_uid, NULL, NULL, NULL, NULL FROM {_table(Instance)} WHERE sop_uid = ANY(%s)"  # noqa: S608
    patients = _patients_upsert_sql().replace("{rows}", rows)
    with connection.cursor() as cursor:
        prepared.execute(
            cursor,
            [
                (_LOCK_MANY, [_LOCK_NAMESPACE, ordered]),
                (f"{patients} UNION ALL {stored}", [*params, institution.pk, institution.pk, timezone.now(), ordered]),
            ],
            prepare=len(received) <= PREPARED_ROWS,
        )
        found = cursor.fetchall()
    return {row[1] for row in found if row[0] is None}, [list(row) for row in found if row[0] is not None]


def write_careful(
    received: Received,
    key: str,
    institution: Institution,
    *,
    actor: audit.Actor,
    via: str,
    source: str,
    known_key: tuple[Any, ...],
    known: tuple[int, int, int] | None,
    fresh: bool = False,
) -> IngestResult:
    """The careful path's rows, inside the caller's transaction (holding the UID's lock): the
    parents read (created when new) and checked, or those remembered under `known_key`
    (`known`) counted in; then the audit event and the instance row. `fresh`: the study and
    series were not in the index a moment ago, so they are created first and read only if
    that finds them there (a round trip less for each, checked all the same)."""
    a = received.attributes
    now = timezone.now()
    with connection.cursor() as cursor:
        if known is None:
            study, series = _parents(cursor, a, institution, received.size, now, fresh=fresh)
            remembered = (study.patient_id, study.pk, series.pk)
            transaction.on_commit(partial(known_parents.put, known_key, remembered))
            statements = []
        else:
            study, series = _remembered_parents(known, a, institution)
            statements = _bumps(study.pk, series.pk, received.size, now)
        instance, rows = _instance_rows(received, key, study, series, actor=actor, via=via, source=source)
        instance.pk = int(_execute_all(cursor, statements + rows)[0])
    series.study = study
    return IngestResult(instance=instance, created=True, study=study, series=series)


def write_new(
    received: Sequence[Received],
    keys: Sequence[str],
    institution: Institution,
    *,
    patients: list[Any],
    actor: audit.Actor,
    via: str,
    sources: Sequence[str],
    known_keys: Sequence[tuple[Any, ...]],
) -> list[IngestResult]:
    """write_careful(fresh=True) for several first instances of series new to the index, each
    of another study (the spool's indexer: ingest.index_spooled_new), each with where it came
    from (`sources`: a device's associations each have their own), inside the caller's
    transaction holding their UIDs' locks and the rows of their `patients` (lock_new, PostgreSQL):
    the patients brought up to date, then the audit events, the studies, their series and the
    instance rows in one round trip, however many there are. A clinic's everyday is many small
    studies: one at a time, these rows had cost four round trips and most of the indexer's time
    each.
    Raises IngestError when a patient was created by a parallel store after lock_new's
    snapshot, and IntegrityError when one of the studies or series is in the index already (a
    new series is then missing for its instance row): the caller rolls back and stores each
    on its own (the careful path finds out which, and why)."""
    patient_pks = _patients_up_to_date(received, patients)
    now = timezone.now()
    serieses, instances, events = [], [], []
    for r, key, patient_pk, source in zip(received, keys, patient_pks, sources, strict=True):
        a = r.attributes
        series = Series(series_uid=a.series_uid, modality=a.modality[:16])  # its keys come with the rows
        instance, event = _instance_and_event(r, key, patient_pk, series, actor=actor, via=via, source=source)
        serieses.append(series)
        instances.append(instance)
        events.append(event)
    audit_sql, audit_params = audit.insert_prepared(events)
    parents_sql, parents_params = _new_parents_sql(received, patient_pks, institution, now)
    instance_sql, instance_params = _insert_instances_sql(instances, series_made_here=True)
    with connection.cursor() as cursor:
        rows = (
            f"{parents_sql}, ins AS ({instance_sql} RETURNING id, sop_uid, series_id)"  # noqa: S608
            " SELECT ins.id, ins.sop_uid, se.id, se.study_id FROM ins JOIN se ON se.id = ins.series_id"
        )
        prepared.execute(
            cursor,
            [(audit_sql, audit_params), (rows, [*parents_params, *instance_params])],
            prepare=len(received) <= PREPARED_ROWS,
        )
        made = {sop_uid: (pk, series_pk, study_pk) for pk, sop_uid, series_pk, study_pk in cursor.fetchall()}
    if len(made) < len(received):  # (the statement fails first: an instance row without its series)
        raise uid_conflict("Study or Series Instance UID indexed meanwhile", received[0].attributes.series_uid)
    results = []
    for r, patient_pk, known_key, series, instance in zip(
        received, patient_pks, known_keys, serieses, instances, strict=True
    ):
        instance.pk, series.pk, study_pk = made[instance.sop_uid]
        study = _new_study(study_pk, r.attributes, institution, patient_pk, r.size, num_series=1)
        series.study = study
        instance.series = series
        transaction.on_commit(partial(known_parents.put, known_key, (patient_pk, study_pk, series.pk)))
        results.append(IngestResult(instance=instance, created=True, study=study, series=series))
    return results


def _patient_rows(received: Sequence[Received]) -> tuple[str, list[Any]]:
    """_patients_upsert_sql's VALUES rows (n, patient_id, name, birth date, sex) and their
    parameters, one per file, in order."""
    params: list[Any] = []
    for n, r in enumerate(received):
        a = r.attributes
        params += [n, a.patient_id, a.patient_name[:324], a.patient_birth_date, a.patient_sex[:16]]
    return ", ".join(["(%s::int, %s::text, %s::text, %s::date, %s::text)"] * len(received)), params


def _patients_up_to_date(received: Sequence[Received], found: list[Any]) -> list[int]:
    """write_new's patients, in order, from lock_new's rows: brought up to date as _patient
    does, file by file (one more statement for a patient whose demographics changed)."""
    rows = {row[1]: row for row in found}
    pks = []
    for r in received:
        a = r.attributes
        row = rows.get(a.patient_id)
        if row is None:  # a parallel store created the patient after the statement's snapshot
            raise uid_conflict("Patient ID created meanwhile", a.study_uid)
        pk, _, name, birth_date, sex, corrected_at = row
        seen = _seen_demographics(a)
        changed = _demographics_changed(seen, name, birth_date, sex)
        if changed and corrected_at is None:
            Patient.objects.filter(pk=pk).update(**changed)
            row[2:5] = [changed.get("name", name), changed.get("birth_date", birth_date), changed.get("sex", sex)]
        pks.append(int(pk))
    return pks


@functools.cache
def _patients_upsert_sql() -> str:
    """The patients of the VALUES rows `{rows}` (n, patient_id, name, birth date, sex) issued
    by one institution: those there read, the others inserted (one row per Patient ID, with
    the values of its first file; no id drawn for a patient who exists); a patient a parallel
    store inserted after the snapshot is in neither."""
    table = _table(Patient)
    return (
        "WITH input (n, patient_id, name, birth_date, sex) AS (VALUES {rows}),"  # noqa: S608
        f" found AS (SELECT id, patient_id, name, birth_date, sex, corrected_at FROM {table}"
        " WHERE issuer_id = %s AND patient_id IN (SELECT patient_id FROM input)),"
        f" made AS (INSERT INTO {table} (issuer_id, patient_id, name, birth_date, sex, created_at)"
        " SELECT DISTINCT ON (patient_id) %s, patient_id, name, birth_date, sex, %s FROM input"
        " WHERE patient_id NOT IN (SELECT patient_id FROM found) ORDER BY patient_id, n"
        " ON CONFLICT (issuer_id, patient_id) DO NOTHING RETURNING id, patient_id, name, birth_date, sex, corrected_at)"
        " SELECT * FROM found UNION ALL SELECT * FROM made"
    )


def _new_parents_sql(
    received: Sequence[Received], patients: Sequence[int], institution: Institution, now: Any
) -> tuple[str, list[Any]]:
    """The common table expressions inserting each file's study (counting it, one series and
    this instance) and its series (counting this instance), unless the study or the series is
    there: `se` holds the (id, Series Instance UID, study id) of the series inserted."""
    rows: list[str] = []
    params: list[Any] = []
    for n, (r, patient_pk) in enumerate(zip(received, patients, strict=True)):
        a = r.attributes
        rows.append(
            "(%s::int, %s::text, %s::bigint, %s::date, %s::time, %s::text, %s::text, %s::text, %s::text,"
            " %s::text, %s::bigint, %s::text, %s::int, %s::text, %s::text)"
        )
        params += [
            n,
            a.study_uid,
            patient_pk,
            a.study_date,
            a.study_time,
            a.accession_number[:16],
            a.study_id[:16],
            a.study_description[:64],
            a.referring_physician[:324],
            a.modality[:16],
            r.size,
            a.series_uid,
            a.series_number,
            a.series_description[:64],
            a.body_part[:16],
        ]
    study, series = _table(Study), _table(Series)
    sql = (
        "WITH input (n, study_uid, patient_id, study_date, study_time, accession_number, study_id, description,"  # noqa: S608
        " referring_physician, modality, size_bytes, series_uid, series_number, series_description, body_part)"
        f" AS (VALUES {', '.join(rows)}),"
        f" st AS (INSERT INTO {study} (study_uid, patient_id, institution_id, study_date, study_time,"
        " accession_number, study_id, description, referring_physician, modalities, num_series, num_instances,"
        " size_bytes, received_at, updated_at)"
        " SELECT study_uid, patient_id, %s, study_date, study_time, accession_number, study_id, description,"
        " referring_physician, modality, 1, 1, size_bytes, %s, %s FROM input ORDER BY n"
        " ON CONFLICT (study_uid) DO NOTHING RETURNING id, study_uid),"
        f" se AS (INSERT INTO {series} (series_uid, study_id, modality, series_number, description, body_part,"
        " num_instances) SELECT i.series_uid, st.id, i.modality, i.series_number, i.series_description, i.body_part, 1"
        " FROM input i JOIN st ON st.study_uid = i.study_uid ORDER BY i.n"
        " ON CONFLICT (series_uid) DO NOTHING RETURNING id, series_uid, study_id)"
    )
    return sql, [*params, institution.pk, now, now]


def _remembered_parents(known: tuple[int, int, int], a: Attributes, institution: Institution) -> tuple[Study, Series]:
    """The study and series of a `known` entry, as unsaved stand-ins holding their keys."""
    patient_pk, study_pk, series_pk = known
    study = Study(pk=study_pk, study_uid=a.study_uid, institution_id=institution.pk, patient_id=patient_pk)
    series = Series(pk=series_pk, series_uid=a.series_uid, study_id=study_pk, modality=a.modality[:16])
    return study, series


def _instance_rows(
    received: Received, key: str, study: Study, series: Series, *, actor: audit.Actor, via: str, source: str
) -> tuple[Instance, list[tuple[str, list[Any]]]]:
    """The instance (without its primary key) and the statements inserting its audit event
    and its row, the last one returning the row's id."""
    instance, event = _instance_and_event(received, key, study.patient_id, series, actor=actor, via=via, source=source)
    instance_sql, instance_params = _insert_instances_sql([instance])
    return instance, [audit.insert_prepared([event]), (f"{instance_sql} RETURNING id", instance_params)]


def _instance_and_event(
    received: Received, key: str, patient_pk: int, series: Series, *, actor: audit.Actor, via: str, source: str
) -> tuple[Instance, AuditEvent]:
    """The unsaved instance row and its "instance.store" audit event."""
    a = received.attributes
    instance = Instance(
        sop_uid=a.sop_uid,
        series=series,
        sop_class_uid=a.sop_class_uid,
        transfer_syntax_uid=received.parsed.transfer_syntax_uid,
        instance_number=a.instance_number,
        rows=a.rows,
        columns=a.columns,
        number_of_frames=a.number_of_frames,
        storage_key=key,
        size_bytes=received.size,
        sha256=received.sha256,
    )
    event = audit.build(
        actor=actor,
        action="instance.store",
        object_type="instance",
        object_id=a.sop_uid,
        patient=str(patient_pk),
        source=source,
        detail={
            "via": via,
            "study_uid": a.study_uid,
            "series_uid": a.series_uid,
            "size": received.size,
            "sha256": received.sha256,
        },
    )
    return instance, event


def _parents(
    cursor: Any, a: Attributes, institution: Institution, size: int, now: Any, *, fresh: bool = False
) -> tuple[Study, Series]:
    """Patient, study and series read (created when new), checked against each other and
    counted one instance more. `fresh`: study and series are most likely new (write_careful)."""
    patient_pk = _patient(cursor, a, institution)
    if fresh:
        created = _new_study_with_series(cursor, a, institution, patient_pk, size, now)
        if created is not None:
            return created
    study = _study(cursor, a, institution, patient_pk, size, now)
    if study.institution_id != institution.pk:
        raise uid_conflict("Study Instance UID of another institution", a.study_uid)
    if study.patient_id != patient_pk:
        raise IngestError(
            "uid-conflict",
            gettext_noop("Study Instance UID %(uid)s belongs to another patient than Patient ID %(patient_id)s"),
            uid=a.study_uid,
            patient_id=a.patient_id,
        )
    series, series_created = _series(cursor, a, study)
    if series.study_id != study.pk:
        raise uid_conflict(f"Series Instance UID of another study than {a.study_uid}", a.series_uid)
    _study_follows_series(cursor, study, a, series_created)
    return study, series


# Parents already checked and brought up to date by an earlier store of this process, for
# files that name the same institution, patient (as written), study and series fields: the
# next instance of a series then only counts itself in (_bumps). Entries are remembered on
# commit; a study deleted since, or a series moved to another study (by this process or
# another), is caught by the instance's INSERT, which takes the series only while it is in
# the remembered study (_insert_instances_sql), and the store is retried without them
# (ingest forgets the entry). A move in this process also forgets its series' entries.


_KNOWN_RAW = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
)


def known_key(a: Attributes, institution: Institution) -> tuple[Any, ...]:
    """The parents' identity and every value they take from a file. The values only written
    to the parents are compared as encoded (with the character set), without decoding."""
    return (
        institution.pk,
        a.patient_id,
        a.study_uid,
        a.series_uid,
        a.modality,
        *(a.encoded(keyword) for keyword in _KNOWN_RAW),
    )


class KnownParents:
    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.rows: dict[tuple[Any, ...], tuple[int, int, int]] = {}

    def get(self, key: tuple[Any, ...]) -> tuple[int, int, int] | None:
        with self.lock:
            return self.rows.get(key)

    def put(self, key: tuple[Any, ...], value: tuple[int, int, int]) -> None:
        with self.lock:
            if len(self.rows) >= self.size:
                self.rows.clear()
            self.rows[key] = value

    def forget(self, key: tuple[Any, ...]) -> None:
        with self.lock:
            self.rows.pop(key, None)

    def forget_series(self, series_pk: int) -> None:
        """Every entry of this series (it moved to another study)."""
        with self.lock:
            for key in [k for k, (_, _, series) in self.rows.items() if series == series_pk]:
                del self.rows[key]


known_parents = KnownParents()


def _bumps(study_pk: int, series_pk: int, size: int, now: Any, *, count: int = 1) -> list[tuple[str, list[Any]]]:
    _, (prepared_now,) = _values(Study, {"updated_at": now})
    return [
        (
            f"UPDATE {_table(Study)} SET num_instances = num_instances + %s, size_bytes = size_bytes + %s,"  # noqa: S608
            " updated_at = %s WHERE id = %s",
            [count, size, prepared_now, study_pk],
        ),
        (f"UPDATE {_table(Series)} SET num_instances = num_instances + %s WHERE id = %s", [count, series_pk]),  # noqa: S608
    ]


def _execute_all(cursor: Any, statements: list[tuple[str, list[Any]]]) -> Any:
    """Run the statements in order; the first row of the last one's result. On PostgreSQL
    they go in one round trip, as statements the session has prepared (alliance.prepared)."""
    if connection.vendor == "postgresql":
        prepared.execute(cursor, statements)
    else:
        for sql, params in statements:
            cursor.execute(sql, params)
    return cursor.fetchone()


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _values(model: type[models.Model], values: dict[str, Any]) -> tuple[str, list[Any]]:
    """Quoted column names and the values prepared for this database, as the ORM would."""
    fields = [model._meta.get_field(name) for name in values]
    concrete = [f for f in fields if isinstance(f, models.Field)]
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in concrete)
    prepared = [f.get_db_prep_save(values[f.name], connection) for f in concrete]
    return columns, prepared


def _insert_new(cursor: Any, model: type[models.Model], values: dict[str, Any], *, unique: str, returning: str) -> Any:
    """Insert the row unless one with the same `unique` columns exists (a parallel store made
    it): the `returning` columns of the new row, or None."""
    columns, params = _values(model, values)
    marks = ", ".join(["%s"] * len(params))
    cursor.execute(
        f"INSERT INTO {_table(model)} ({columns}) VALUES ({marks})"  # noqa: S608
        f" ON CONFLICT ({unique}) DO NOTHING RETURNING {returning}",
        params,
    )
    return cursor.fetchone()


def _insert_instances_sql(instances: Sequence[Instance], *, series_made_here: bool = False) -> tuple[str, list[Any]]:
    """One INSERT of instance rows (every concrete field but the primary key, auto_now(_add)
    applied), each of whose series must still be in the study its stand-in names
    (`instance.series.study_id`): a series moved to another study since its parents were
    remembered (imaging.maintenance.series_move, perhaps in another process) makes the series
    id NULL, and the whole statement fails (IntegrityError) before anything is counted under
    the old study. `series_made_here` (write_new): each row's series is instead the one of its
    Series Instance UID that the statement's own `se` inserted (NULL, and the statement fails,
    when it inserted none)."""
    sql, fields = _insert_instance_statement(connection.vendor, series_made_here)
    head, _, group = sql.rpartition(" VALUES ")
    params = []
    for instance in instances:
        for f in fields:
            if f.name != "series":
                params.append(f.get_db_prep_save(f.pre_save(instance, True), connection))
            elif series_made_here:
                params.append(instance.series.series_uid)
            else:
                params += [f.get_db_prep_save(f.pre_save(instance, True), connection), instance.series.study_id]
    return f"{head} VALUES {', '.join([group] * len(instances))}", params


@functools.cache
def _insert_instance_statement(vendor: str, series_made_here: bool) -> tuple[str, list[models.Field[Any, Any]]]:
    fields = [f for f in Instance._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    if series_made_here:
        series = "(SELECT id FROM se WHERE series_uid = %s)"
    else:
        series = f"(SELECT id FROM {_table(Series)} WHERE id = %s AND study_id = %s)"  # noqa: S608
    marks = ", ".join(series if f.name == "series" else "%s" for f in fields)
    return f"INSERT INTO {_table(Instance)} ({columns}) VALUES ({marks})", fields  # noqa: S608


def _patient(cursor: Any, a: Attributes, institution: Institution) -> int:
    """The patient's primary key (issuer = our institution), created or its blanks and
    changed demographics brought up to date from this file, unless an admin corrected them
    (imaging.maintenance): a correction outlives the devices that keep sending the old values."""
    select = f"SELECT id, name, birth_date, sex, corrected_at FROM {_table(Patient)} WHERE issuer_id = %s AND patient_id = %s"  # noqa: S608,E501
    seen = _seen_demographics(a)
    new = {"issuer": institution.pk, "patient_id": a.patient_id, **seen, "created_at": timezone.now()}
    if connection.vendor == "postgresql":
        # read, or create when absent, in one round trip (a new patient is a clinic's everyday)
        columns, params = _values(Patient, new)
        cursor.execute(_patient_upsert(columns), [institution.pk, a.patient_id, *params])
        row = cursor.fetchone()
        if row is not None and row[5]:
            return int(row[0])  # created with this file's values: nothing to bring up to date
        row = row[:5] if row is not None else None
    else:
        cursor.execute(select, [institution.pk, a.patient_id])
        row = cursor.fetchone()
        if row is None:
            inserted = _insert_new(cursor, Patient, new, unique="issuer_id, patient_id", returning="id")
            if inserted is not None:
                return int(inserted[0])
    if row is None:
        # another store created the patient meanwhile: read it as usual
        cursor.execute(select, [institution.pk, a.patient_id])
        row = cursor.fetchone()
    pk, name, birth_date, sex, corrected_at = row
    changed = _demographics_changed(seen, name, birth_date, sex)
    if changed and corrected_at is None:
        Patient.objects.filter(pk=pk).update(**changed)
    return int(pk)


def _seen_demographics(a: Attributes) -> dict[str, Any]:
    return {"name": a.patient_name[:324], "birth_date": a.patient_birth_date, "sex": a.patient_sex[:16]}


def _demographics_changed(seen: dict[str, Any], name: str, birth_date: Any, sex: str) -> dict[str, Any]:
    """The file's demographics that differ from the patient's row (a blank in the file changes nothing)."""
    stored = {"name": name, "birth_date": str(birth_date) if birth_date else None, "sex": sex}
    return {k: v for k, v in seen.items() if v and stored[k] != (v.isoformat() if isinstance(v, dt.date) else v)}


@functools.cache
def _patient_upsert(columns: str) -> str:
    """The patient's row with a last column False, or the row inserted (its values) with True,
    in one statement; no row when a parallel store inserted the patient after this statement's
    snapshot (the caller reads it then). Nothing is inserted, and no id drawn, when it exists."""
    table = _table(Patient)
    marks = ", ".join(["%s"] * len(columns.split(", ")))
    return (
        f"WITH found AS (SELECT id, name, birth_date, sex, corrected_at FROM {table}"  # noqa: S608
        " WHERE issuer_id = %s AND patient_id = %s),"
        f" made AS (INSERT INTO {table} ({columns}) SELECT {marks} WHERE NOT EXISTS (SELECT 1 FROM found)"
        " ON CONFLICT (issuer_id, patient_id) DO NOTHING RETURNING id, name, birth_date, sex, corrected_at)"
        " SELECT *, FALSE FROM found UNION ALL SELECT *, TRUE FROM made"
    )


_STUDY_FILL = ("study_date", "study_time", "accession_number", "description", "referring_physician")


def _study_fill(a: Attributes) -> dict[str, Any]:
    return {
        "study_date": a.study_date,
        "study_time": a.study_time,
        "accession_number": a.accession_number[:16],
        "description": a.study_description[:64],
        "referring_physician": a.referring_physician[:324],
    }


def _study(cursor: Any, a: Attributes, institution: Institution, patient_pk: int, size: int, now: Any) -> Study:
    """The study row, locked until commit: counted one instance more, its blank fields filled
    from this file; created (with this instance counted) when it is new."""
    fill = _study_fill(a)
    study = _bump_study(cursor, a.study_uid, fill, size, now)
    if study is not None:
        return study
    study = _insert_study(cursor, a, institution, patient_pk, size, now, num_series=0)
    if study is None:  # another store created it meanwhile
        study = _bump_study(cursor, a.study_uid, fill, size, now)
        if study is None:
            raise IngestError(
                "storage-failed", gettext_noop("the index could not be updated (%(error)s)"), error="race"
            )
    return study


def _insert_study(
    cursor: Any, a: Attributes, institution: Institution, patient_pk: int, size: int, now: Any, *, num_series: int
) -> Study | None:
    """The new study row counting this instance (and `num_series`), or None when one with its
    UID is there already (nothing written)."""
    fill = _study_fill(a)
    new = {
        "study_uid": a.study_uid,
        "patient": patient_pk,
        "institution": institution.pk,
        **fill,
        "study_id": a.study_id[:16],
        "modalities": a.modality[:16],
        "num_series": num_series,
        "num_instances": 1,
        "size_bytes": size,
        "received_at": now,
        "updated_at": now,
    }
    inserted = _insert_new(cursor, Study, new, unique="study_uid", returning="id")
    if inserted is None:
        return None
    return _new_study(int(inserted[0]), a, institution, patient_pk, size, num_series=num_series)


def _new_study(
    pk: int, a: Attributes, institution: Institution, patient_pk: int, size: int, *, num_series: int
) -> Study:
    """A stand-in for the study row just inserted from `a`, counting this instance."""
    return Study(
        pk=pk,
        study_uid=a.study_uid,
        patient_id=patient_pk,
        institution_id=institution.pk,
        modalities=a.modality[:16],
        num_series=num_series,
        num_instances=1,
        size_bytes=size,
        **_study_fill(a),
        study_id=a.study_id[:16],
    )


def _new_study_with_series(
    cursor: Any, a: Attributes, institution: Institution, patient_pk: int, size: int, now: Any
) -> tuple[Study, Series] | None:
    """A new study created with its new series (counting it and this instance) in two round
    trips; None, with nothing written, when the study is there already (then _study reads
    it). Once the study is ours, a series already there is another study's: refused."""
    study = _insert_study(cursor, a, institution, patient_pk, size, now, num_series=1)
    if study is None:
        return None
    series = _insert_series(cursor, a, study.pk)
    if series is None:
        raise uid_conflict(f"Series Instance UID of another study than {a.study_uid}", a.series_uid)
    return study, series


def _bump_study(cursor: Any, study_uid: str, fill: dict[str, Any], size: int, now: Any) -> Study | None:
    table = _table(Study)
    sets = [
        "num_instances = num_instances + 1",
        "size_bytes = size_bytes + %s",
        "updated_at = %s",
        "study_date = COALESCE(study_date, %s)",
        "study_time = COALESCE(study_time, %s)",
        *(f"{f} = CASE WHEN {f} = '' THEN %s ELSE {f} END" for f in _STUDY_FILL[2:]),
    ]
    _, prepared = _values(Study, {"size_bytes": size, "updated_at": now, **fill})
    cursor.execute(
        f"UPDATE {table} SET {', '.join(sets)} WHERE study_uid = %s RETURNING id, institution_id, patient_id,"  # noqa: S608
        " modalities, num_series, num_instances, size_bytes",
        [*prepared, study_uid],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    pk, institution_id, patient_id, modalities, num_series, num_instances, size_bytes = row
    return Study(
        pk=pk,
        study_uid=study_uid,
        institution_id=institution_id,
        patient_id=patient_id,
        modalities=modalities,
        num_series=num_series,
        num_instances=num_instances,
        size_bytes=size_bytes,
    )


def _series(cursor: Any, a: Attributes, study: Study) -> tuple[Series, bool]:
    """The series row, locked until commit and counted one instance more; created when new."""
    bump = f"UPDATE {_table(Series)} SET num_instances = num_instances + 1 WHERE series_uid = %s RETURNING id, study_id"  # noqa: S608
    cursor.execute(bump, [a.series_uid])
    row = cursor.fetchone()
    if row is not None:
        return Series(pk=row[0], series_uid=a.series_uid, study_id=row[1], modality=a.modality[:16]), False
    series = _insert_series(cursor, a, study.pk)
    if series is not None:
        return series, True
    cursor.execute(bump, [a.series_uid])  # another store created it meanwhile
    row = cursor.fetchone()
    return Series(pk=row[0], series_uid=a.series_uid, study_id=row[1], modality=a.modality[:16]), False


def _insert_series(cursor: Any, a: Attributes, study_pk: int) -> Series | None:
    """The new series row counting this instance, or None when one with its UID is there."""
    new = {
        "series_uid": a.series_uid,
        "study": study_pk,
        "modality": a.modality[:16],
        "series_number": a.series_number,
        "description": a.series_description[:64],
        "body_part": a.body_part[:16],
        "num_instances": 1,
    }
    row = _insert_new(cursor, Series, new, unique="series_uid", returning="id, study_id")
    if row is None:
        return None
    return Series(pk=row[0], series_uid=a.series_uid, study_id=row[1], modality=a.modality[:16])


def _study_follows_series(cursor: Any, study: Study, a: Attributes, series_created: bool) -> None:
    """A new series counts in the study; a new modality joins the study's list (while it fits)."""
    changes: dict[str, Any] = {}
    if series_created:
        changes["num_series"] = study.num_series + 1
    modalities = study.modality_list
    if a.modality and a.modality not in modalities and len(study.modalities) + len(a.modality) + 1 <= 64:
        changes["modalities"] = "\\".join([*modalities, a.modality])
    if not changes:
        return
    columns, params = _values(Study, changes)
    sets = ", ".join(f"{c} = %s" for c in columns.split(", "))
    cursor.execute(f"UPDATE {_table(Study)} SET {sets} WHERE id = %s", [*params, study.pk])  # noqa: S608
    for field, value in changes.items():
        setattr(study, field, value)
