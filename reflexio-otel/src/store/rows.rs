//! The rows of the store: what a delta writes, and what is read back after a write or a poll.

use crate::event::{CoveConfig, Fraction, IdempotencyKey, Name};
use crate::model::bucket::{Bucket, FactBucket, RetentionBucket};
use crate::model::changes::{Changes, Keyed};
use crate::model::count::{self, MAX_COUNT};
use crate::model::delta::Delta;
use crate::model::locks::HeldLock;
use crate::model::totals::{KEPT_TABLES, TableLabel};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A minute or sequence number as SQLite stores it (both are far below `i64::MAX`).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A minute or sequence number read back.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A count or sum as stored: it never passes [`MAX_COUNT`], so it is never negative.
fn count_to_sql(v: u64) -> i64 {
    // Below `i64::MAX` after the clamp.
    count::clamp(v) as i64
}

/// A stored count or sum, by the rule of every count: a value past [`MAX_COUNT`] (a float an
/// earlier version's SQL addition overflowed into, or a negative integer it wrapped to) reads
/// as the limit; anything else that is not a count reads as 0. Reading never fails.
fn count_from_sql(v: ValueRef<'_>) -> u64 {
    match v {
        ValueRef::Integer(i) => u64::try_from(i).unwrap_or(MAX_COUNT),
        ValueRef::Real(f) if f >= MAX_COUNT as f64 => MAX_COUNT,
        ValueRef::Real(f) if f > 0.0 => f as u64,
        _ => 0,
    }
}

/// `column = column + excluded.column`, by the rule of every count: stopping at
/// [`MAX_COUNT`], and a stored value already past it (negative or a float, from an earlier
/// version) staying at the limit. Pure integer arithmetic: SQLite never overflows into a float.
fn add_sql(column: &str, added: &str) -> String {
    format!(
        "{column} = CASE WHEN {column} < 0 OR {added} > {MAX_COUNT} - {column} THEN {MAX_COUNT} \
         ELSE {column} + {added} END"
    )
}

/// The `DO UPDATE SET` list adding each of `columns` from the inserted row.
fn add_excluded(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| add_sql(c, &format!("excluded.{c}")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn time(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// Claims `key` for a batch recording `accepted` events at `now`: if it was claimed after
/// `now - window` (by any process, or earlier in this transaction) the batch is a replay or a
/// conflict and must not be written; otherwise the key is kept with this batch's result.
pub(crate) fn claim_key(
    tx: &Transaction<'_>,
    key: &IdempotencyKey,
    accepted: u64,
    now: SystemTime,
    window: Duration,
) -> rusqlite::Result<Keyed> {
    let cutoff = nanos(now.checked_sub(window).unwrap_or(UNIX_EPOCH));
    let seen: Option<(Vec<u8>, i64, i64)> = tx
        .prepare_cached("SELECT fingerprint, accepted, at_ns FROM idempotency_keys WHERE key = ?1")?
        .query_row([key.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    match seen {
        Some((fingerprint, accepted, at)) if at >= cutoff => {
            return Ok(if fingerprint == key.fingerprint() {
                Keyed::Replayed {
                    accepted: to_u64(accepted),
                    at: time(at),
                }
            } else {
                Keyed::Conflict { at: time(at) }
            });
        }
        Some(_) => {
            // Seen before the window: forgotten, and taken by this batch.
            tx.prepare_cached(
                "UPDATE idempotency_keys SET fingerprint = ?2, accepted = ?3, at_ns = ?4 \
                 WHERE key = ?1",
            )?
            .execute(params![
                key.as_str(),
                key.fingerprint(),
                count_to_sql(accepted),
                nanos(now)
            ])?;
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO idempotency_keys (key, fingerprint, accepted, at_ns) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                key.as_str(),
                key.fingerprint(),
                count_to_sql(accepted),
                nanos(now)
            ])?;
            tx.prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'idempotency_keys'")?
                .execute([])?;
        }
    }
    Ok(Keyed::Recorded)
}

/// Forgets the keys claimed before `now - window`, then the oldest past `max`. Returns how many
/// keys still within the window were dropped for the bound.
pub(crate) fn prune_keys(
    tx: &Transaction<'_>,
    now: SystemTime,
    window: Duration,
    max: u64,
) -> rusqlite::Result<u64> {
    let cutoff = nanos(now.checked_sub(window).unwrap_or(UNIX_EPOCH));
    let expired = tx
        .prepare_cached("DELETE FROM idempotency_keys WHERE at_ns < ?1")?
        .execute([cutoff])?;
    let mut count: i64 = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'idempotency_keys'")?
        .query_row([], |r| r.get(0))?;
    count -= expired as i64;
    let excess = (count - to_i64(max)).max(0);
    if excess > 0 {
        count -= tx
            .prepare_cached(
                "DELETE FROM idempotency_keys WHERE key IN \
                 (SELECT key FROM idempotency_keys ORDER BY at_ns LIMIT ?1)",
            )?
            .execute([excess])? as i64;
    }
    if expired > 0 || excess > 0 {
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'idempotency_keys'")?
            .execute([count.max(0)])?;
    }
    Ok(to_u64(excess))
}

/// The sequence number of the last write, by any process.
pub(crate) fn current_seq(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    tx.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(to_u64)
}

/// Adds each `(minute, counts)` to its row of `table`, whose count columns are `columns`; each
/// touched row is stamped `seq`.
fn write_minutes(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[&str],
    seq: i64,
    rows: impl Iterator<Item = (u64, Vec<u64>)>,
) -> rusqlite::Result<()> {
    let placeholders: Vec<_> = (1..=columns.len() + 2).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {table} (minute, {}, seq) VALUES ({}) \
         ON CONFLICT (minute) DO UPDATE SET {}, seq = excluded.seq",
        columns.join(", "),
        placeholders.join(", "),
        add_excluded(columns),
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    for (minute, counts) in rows {
        let values = std::iter::once(to_i64(minute)).chain(counts.into_iter().map(count_to_sql));
        stmt.execute(rusqlite::params_from_iter(values.chain([seq])))?;
    }
    Ok(())
}

/// The count columns of `fact_minutes`, in the order [`fact_counts`] gives them.
const FACT_COLUMNS: [&str; FactBucket::FIELDS] = [
    "facts",
    "hallucination_assessed",
    "atomicity_assessed",
    "citation_assessed",
    "cove_facts",
    "hallucinated",
    "non_atomic",
    "coverage_sum",
    "confidence_sum",
    "rounds_sum",
];

/// The counts of a minute's bucket, in [`FACT_COLUMNS`] order: [`FactBucket::fields`].
fn fact_counts(b: &FactBucket) -> Vec<u64> {
    b.fields().to_vec()
}

/// The count columns of `retention_minutes` and `retention_tables`.
const RETENTION_COLUMNS: [&str; 3] = ["operations", "deleted_records", "errors"];

/// Writes `d`, stamping the rows it touches with `seq`.
pub(crate) fn write(tx: &Transaction<'_>, d: &Delta, seq: i64) -> rusqlite::Result<()> {
    write_minutes(
        tx,
        "fact_minutes",
        &FACT_COLUMNS,
        seq,
        d.facts.iter().map(|(minute, b)| (*minute, fact_counts(b))),
    )?;
    write_minutes(
        tx,
        "retention_minutes",
        &RETENTION_COLUMNS,
        seq,
        d.retention
            .iter()
            .map(|(minute, b)| (*minute, vec![b.operations, b.deleted_records, b.errors])),
    )?;

    let mut counter = tx.prepare_cached(&format!(
        "UPDATE counters SET {}, seq = ?3 WHERE name = ?1",
        add_sql("value", "?2")
    ))?;
    let h = &d.histograms;
    for (name, delta) in [
        ("transcriptions", d.totals.transcriptions),
        ("facts", d.totals.facts),
        ("hallucination_assessed", d.totals.hallucination_assessed),
        ("digests", d.totals.digests),
        ("hallucinated", d.totals.hallucinated),
        ("atomicity_assessed", d.totals.atomicity_assessed),
        ("atomicity_violations", d.totals.atomicity_violations),
        ("coverage_sum", h.coverage.sum),
        ("confidence_sum", h.confidence.sum),
        ("rounds_sum", h.rounds.sum),
    ] {
        if delta == 0 {
            continue;
        }
        // Every counter row is made by the migrations: one missing fails the write.
        if counter.execute(params![name, count_to_sql(delta), seq])? != 1 {
            return Err(rusqlite::Error::QueryReturnedNoRows);
        }
    }
    let mut bucket = tx.prepare_cached(&format!(
        "UPDATE histogram_buckets SET {}, seq = ?4 \
         WHERE histogram = ?1 AND bucket = ?2 AND ?3 != 0",
        add_sql("count", "?3")
    ))?;
    let counts: [(&str, &[u64]); 3] = [
        ("coverage", &h.coverage.buckets),
        ("confidence", &h.confidence.buckets),
        ("rounds", &h.rounds.buckets),
    ];
    for (name, buckets) in counts {
        for (i, c) in buckets.iter().enumerate() {
            bucket.execute(params![name, i as i64, count_to_sql(*c), seq])?;
        }
    }

    write_tables(tx, d, seq)?;

    if let Some((config, at)) = d.cove {
        tx.execute(
            "INSERT INTO cove_config (id, enabled, threshold, at_ns, seq) VALUES (1, ?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled, \
             threshold = excluded.threshold, at_ns = excluded.at_ns, seq = excluded.seq \
             WHERE excluded.at_ns >= cove_config.at_ns",
            params![config.enabled, to_i64(config.threshold.nanos()), nanos(at), seq],
        )?;
    }

    if !d.locks.is_empty() {
        let mut hold = tx.prepare_cached(
            "INSERT OR REPLACE INTO locks (name, holder, pid, host, acquired_at_ns) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut release = tx.prepare_cached("DELETE FROM locks WHERE name = ?1 AND holder = ?2")?;
        for ((name, holder), change) in &d.locks {
            match change {
                Some(l) => hold.execute(params![
                    name.as_str(),
                    holder.as_str(),
                    l.pid,
                    l.host.as_ref().map(Name::as_str),
                    nanos(l.acquired_at)
                ])?,
                None => release.execute(params![name.as_str(), holder.as_str()])?,
            };
        }
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'locks_seq'",
            [],
        )?;
    }
    Ok(())
}

/// Adds the per-table retention counts of `d`. A table the store does not hold yet gets a row
/// only while fewer than [`KEPT_TABLES`] tables have one, whoever wrote them (this batch,
/// another batch of the same commit, another process); past that, its counts go to the
/// overflow row (name `''`), as they go to the overflow series in the exposition.
fn write_tables(tx: &Transaction<'_>, d: &Delta, seq: i64) -> rusqlite::Result<()> {
    if d.tables.is_empty() {
        return Ok(());
    }
    let mut update = tx.prepare_cached(&format!(
        "UPDATE retention_tables SET {}, {}, {}, seq = ?5 WHERE name = ?1",
        add_sql("operations", "?2"),
        add_sql("deleted_records", "?3"),
        add_sql("errors", "?4"),
    ))?;
    let mut insert = tx.prepare_cached(&format!(
        "INSERT INTO retention_tables (name, operations, deleted_records, errors, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET {}, seq = excluded.seq",
        add_excluded(&RETENTION_COLUMNS)
    ))?;
    let mut named: usize = tx.query_row(
        "SELECT count(*) FROM retention_tables WHERE name != ''",
        [],
        |r| r.get::<_, i64>(0),
    )? as usize;
    for (label, b) in &d.tables {
        let counts = [b.operations, b.deleted_records, b.errors].map(count_to_sql);
        let name = match label {
            TableLabel::Table(n) => n.as_str(),
            TableLabel::Overflow => "",
        };
        if !name.is_empty()
            && update.execute(params![name, counts[0], counts[1], counts[2], seq])? == 1
        {
            continue;
        }
        let name = if name.is_empty() || named >= KEPT_TABLES {
            ""
        } else {
            named += 1;
            name
        };
        insert.execute(params![name, counts[0], counts[1], counts[2], seq])?;
    }
    Ok(())
}

/// Folds the table rows past the first [`KEPT_TABLES`] (by the order the store first saw them)
/// into the overflow row: a store an earlier version wrote without the limit holds no more
/// tables than are kept afterwards. What every reader exports does not change, since readers
/// fold those tables into the overflow series already. Returns how many rows were folded.
pub(crate) fn fold_tables(conn: &mut Connection) -> rusqlite::Result<usize> {
    let excess = format!(
        "SELECT id FROM retention_tables WHERE name != '' ORDER BY id LIMIT -1 OFFSET {KEPT_TABLES}"
    );
    let named: i64 = conn.query_row(
        "SELECT count(*) FROM retention_tables WHERE name != ''",
        [],
        |r| r.get(0),
    )?;
    if named as usize <= KEPT_TABLES {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut folded = RetentionBucket::default();
    let mut rows = 0;
    {
        let mut stmt = tx.prepare(&format!(
            "SELECT operations, deleted_records, errors FROM retention_tables WHERE id IN ({excess})"
        ))?;
        let mut it = stmt.query([])?;
        while let Some(r) = it.next()? {
            folded.add(&RetentionBucket {
                operations: count_from_sql(r.get_ref(0)?),
                deleted_records: count_from_sql(r.get_ref(1)?),
                errors: count_from_sql(r.get_ref(2)?),
            });
            rows += 1;
        }
    }
    tx.execute(
        &format!("DELETE FROM retention_tables WHERE id IN ({excess})"),
        [],
    )?;
    let seq: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))?;
    let mut overflow = Delta::default();
    overflow.tables.insert(TableLabel::Overflow, folded);
    write_tables(&tx, &overflow, seq)?;
    tx.commit()?;
    Ok(rows)
}

/// The rows of `sql` stamped after `since`: a minute, then up to ten counts that `bucket`
/// turns into the minute's bucket.
fn read_minutes<B>(
    tx: &Transaction<'_>,
    sql: &str,
    since: i64,
    bucket: impl Fn(&[u64]) -> B,
) -> rusqlite::Result<Vec<(u64, B)>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let columns = stmt.column_count();
    stmt.query_map([since], |r| {
        let mut values = [0u64; 1 + FactBucket::FIELDS];
        for (i, v) in values.iter_mut().enumerate().take(columns).skip(1) {
            *v = count_from_sql(r.get_ref(i)?);
        }
        Ok((to_u64(r.get(0)?), bucket(&values[1..columns])))
    })?
    .collect()
}

/// Reads the window minutes stamped after `since`, and all of the small tables.
pub(crate) fn read_changes(tx: &Transaction<'_>, since: u64) -> rusqlite::Result<Changes> {
    let since = to_i64(since);
    let mut c = Changes::default();
    let get = |r: &rusqlite::Row<'_>, i: usize| r.get_ref(i).map(count_from_sql);

    c.facts = read_minutes(
        tx,
        &format!(
            "SELECT minute, {} FROM fact_minutes WHERE seq > ?1",
            FACT_COLUMNS.join(", ")
        ),
        since,
        |v| {
            let mut fields = [0; FactBucket::FIELDS];
            fields.copy_from_slice(v);
            FactBucket::from_fields(fields)
        },
    )?;
    c.retention = read_minutes(
        tx,
        "SELECT minute, operations, deleted_records, errors FROM retention_minutes WHERE seq > ?1",
        since,
        |v| RetentionBucket {
            operations: v[0],
            deleted_records: v[1],
            errors: v[2],
        },
    )?;

    let mut stmt = tx.prepare_cached("SELECT name, value FROM counters")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let value = get(r, 1)?;
        let (t, h) = (&mut c.totals, &mut c.histograms);
        match r.get_ref(0)?.as_str()? {
            "transcriptions" => t.transcriptions = value,
            "facts" => t.facts = value,
            "hallucination_assessed" => t.hallucination_assessed = value,
            "atomicity_assessed" => t.atomicity_assessed = value,
            "digests" => t.digests = value,
            "hallucinated" => t.hallucinated = value,
            "atomicity_violations" => t.atomicity_violations = value,
            "coverage_sum" => h.coverage.sum = value,
            "confidence_sum" => h.confidence.sum = value,
            "rounds_sum" => h.rounds.sum = value,
            _ => {}
        }
    }

    let mut stmt = tx.prepare_cached("SELECT histogram, bucket, count FROM histogram_buckets")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (i, count) = (get(r, 1)? as usize, get(r, 2)?);
        let h = &mut c.histograms;
        let buckets: &mut [u64] = match r.get_ref(0)?.as_str()? {
            "coverage" => &mut h.coverage.buckets,
            "confidence" => &mut h.confidence.buckets,
            "rounds" => &mut h.rounds.buckets,
            _ => continue,
        };
        if let Some(b) = buckets.get_mut(i) {
            *b = count;
        }
    }

    let mut stmt = tx.prepare_cached(
        "SELECT name, operations, deleted_records, errors FROM retention_tables ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name = r.get_ref(0)?.as_str()?;
        let label = if name.is_empty() {
            TableLabel::Overflow
        } else {
            match Name::new(name) {
                Ok(n) => TableLabel::Table(n),
                Err(_) => TableLabel::Overflow,
            }
        };
        c.tables.push((
            label,
            RetentionBucket {
                operations: get(r, 1)?,
                deleted_records: get(r, 2)?,
                errors: get(r, 3)?,
            },
        ));
    }

    c.cove = tx
        .query_row(
            "SELECT enabled, threshold, at_ns FROM cove_config WHERE id = 1",
            [],
            |r| {
                let threshold = Fraction::new(get(r, 1)? as f64 / 1e9).unwrap_or(Fraction::ZERO);
                Ok((
                    CoveConfig {
                        enabled: r.get(0)?,
                        threshold,
                    },
                    time(r.get(2)?),
                ))
            },
        )
        .optional()?;

    let mut stmt = tx.prepare_cached("SELECT key, value FROM checkpoints")?;
    c.checkpoints = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;

    let mut stmt =
        tx.prepare_cached("SELECT name, holder, pid, host, acquired_at_ns FROM locks")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (Ok(name), Ok(holder)) = (
            Name::new(r.get_ref(0)?.as_str()?),
            Name::new(r.get_ref(1)?.as_str()?),
        ) else {
            continue;
        };
        let host: Option<String> = r.get(3)?;
        c.locks.push(HeldLock {
            name,
            holder,
            pid: r.get(2)?,
            host: host.and_then(|h| Name::new(&h).ok()),
            acquired_at: time(r.get(4)?),
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LockEvent;
    use crate::store::schema;
    use rusqlite::Connection;
    use std::path::Path;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().expect("in memory");
        schema::migrate(&mut conn, Path::new(":memory:"), 0, schema::LATEST).expect("schema");
        conn
    }

    /// Writes `d` in a transaction of its own, stamped `seq`, and reads back what is stamped
    /// after `since`.
    fn round_trip(conn: &mut Connection, d: &Delta, seq: i64, since: u64) -> Changes {
        let tx = conn.transaction().expect("transaction");
        write(&tx, d, seq).expect("written");
        let changes = read_changes(&tx, since).expect("read");
        tx.commit().expect("committed");
        changes
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    #[test]
    fn a_delta_reads_back_as_written() {
        let mut conn = store();
        let fact = crate::event::Fact::new(0.9)
            .expect("valid")
            .hallucinated(true)
            .with_cove(0.8, 2)
            .expect("valid");
        let mut d = Delta::default();
        d.add_facts(100, &FactBucket::of(&fact));
        d.add_facts(
            101,
            &FactBucket::of(&crate::event::Fact::unassessed().atomic(false)),
        );
        d.histograms.observe(&fact);
        d.totals.transcriptions = 4;
        d.totals.digests = 1;
        let run = RetentionBucket {
            operations: 1,
            deleted_records: 12,
            errors: 1,
        };
        d.add_retention(100, TableLabel::Table(name("facts")), &run);
        d.add_retention(101, TableLabel::Overflow, &run);
        let config = CoveConfig::new(true, 0.7).expect("valid");
        d.set_cove(config, at(1_000));
        let mut lock = LockEvent::new("digest", "w1").expect("valid");
        lock.pid = Some(42);
        lock.host = Some(name("host-a"));
        let held = HeldLock::new(&lock, at(2_000));
        d.lock(&lock.name, &lock.holder, Some(held.clone()));

        let c = round_trip(&mut conn, &d, 1, 0);
        let mut facts = c.facts.clone();
        facts.sort_by_key(|f| f.0);
        assert_eq!(facts, d.facts.clone().into_iter().collect::<Vec<_>>());
        assert_eq!(c.retention, vec![(100, run), (101, run)]);
        assert_eq!(c.totals, d.totals);
        assert_eq!(c.histograms, d.histograms);
        assert_eq!(
            c.tables,
            vec![
                (TableLabel::Table(name("facts")), run),
                (TableLabel::Overflow, run)
            ],
            "in the order the store first saw them"
        );
        assert_eq!(c.cove, Some((config, at(1_000))));
        assert_eq!(c.locks, vec![held]);
        assert!(c.checkpoints.is_empty());
    }

    #[test]
    fn writes_add_up_and_reads_take_what_is_stamped_after_the_last() {
        let mut conn = store();
        let mut d = Delta::default();
        d.add_facts(
            100,
            &FactBucket {
                facts: 2,
                ..FactBucket::default()
            },
        );
        round_trip(&mut conn, &d, 1, 0);
        let mut later = d.clone();
        later.add_facts(
            200,
            &FactBucket {
                facts: 1,
                ..FactBucket::default()
            },
        );
        let c = round_trip(&mut conn, &later, 2, 1);
        let mut facts: Vec<_> = c.facts.iter().map(|(m, b)| (*m, b.facts)).collect();
        facts.sort();
        assert_eq!(
            facts,
            [(100, 4), (200, 1)],
            "both touched by write 2, summed"
        );
        assert_eq!(c.totals.facts, 5);
        let c = round_trip(&mut conn, &Delta::default(), 3, 2);
        assert!(c.facts.is_empty(), "nothing stamped after write 2");
        assert_eq!(c.totals.facts, 5, "counters are read whole");
    }

    #[test]
    fn counts_stop_at_the_limit_in_sql_and_in_rust_and_always_read_back() {
        let mut conn = store();
        let mut d = Delta::default();
        d.histograms.coverage.sum = MAX_COUNT - 1;
        d.histograms.coverage.buckets[0] = MAX_COUNT - 1;
        d.totals.facts = MAX_COUNT;
        d.add_facts(
            7,
            &FactBucket::from_fields([MAX_COUNT - 1; FactBucket::FIELDS]),
        );
        d.add_retention(
            7,
            TableLabel::Overflow,
            &RetentionBucket {
                deleted_records: MAX_COUNT - 1,
                ..RetentionBucket::default()
            },
        );
        round_trip(&mut conn, &d, 1, 0);
        let c = round_trip(&mut conn, &d, 2, 0);
        assert_eq!(c.histograms.coverage.sum, MAX_COUNT);
        assert_eq!(c.histograms.coverage.buckets[0], MAX_COUNT);
        assert_eq!(c.totals.facts, MAX_COUNT);
        assert_eq!(
            c.facts,
            [(7, FactBucket::from_fields([MAX_COUNT; FactBucket::FIELDS]))],
            "every fact column"
        );
        assert_eq!(c.retention[0].1.deleted_records, MAX_COUNT);
        assert_eq!(c.tables[0].1.deleted_records, MAX_COUNT);

        // What an earlier version could leave: a wrapped negative count and an overflowed float.
        conn.execute_batch(
            "UPDATE counters SET value = -5 WHERE name = 'digests';
             UPDATE retention_minutes SET operations = 1e19;",
        )
        .expect("old values");
        let mut more = Delta::default();
        more.totals.digests = 1;
        more.add_retention(7, TableLabel::Overflow, &RetentionBucket::default());
        let c = round_trip(&mut conn, &more, 3, 0);
        assert_eq!(c.totals.digests, MAX_COUNT);
        assert_eq!(c.retention[0].1.operations, MAX_COUNT);
        let stored: (String, i64) = conn
            .query_row(
                "SELECT typeof(operations), operations FROM retention_minutes",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("row");
        assert_eq!(
            stored,
            ("integer".to_owned(), i64::MAX),
            "written back whole"
        );
    }

    #[test]
    fn new_tables_past_the_kept_ones_go_to_the_overflow_row() {
        let mut conn = store();
        let run = RetentionBucket {
            operations: 1,
            ..RetentionBucket::default()
        };
        let mut d = Delta::default();
        for i in 0..KEPT_TABLES + 5 {
            d.add_retention(1, TableLabel::Table(name(&format!("t{i:05}"))), &run);
        }
        let c = round_trip(&mut conn, &d, 1, 0);
        assert_eq!(c.tables.len(), KEPT_TABLES + 1);
        assert_eq!(
            c.tables.last(),
            Some(&(
                TableLabel::Overflow,
                RetentionBucket {
                    operations: 5,
                    ..RetentionBucket::default()
                }
            ))
        );
        let mut known = Delta::default();
        known.add_retention(1, TableLabel::Table(name("t00000")), &run);
        known.add_retention(1, TableLabel::Table(name("new")), &run);
        let c = round_trip(&mut conn, &known, 2, 1);
        assert_eq!(
            c.tables.len(),
            KEPT_TABLES + 1,
            "a kept table still adds up"
        );
        assert_eq!(c.tables[0].1.operations, 2);
        assert_eq!(c.tables.last().map(|t| t.1.operations), Some(6));
    }

    #[test]
    fn a_store_with_tables_past_the_kept_ones_is_folded_into_the_overflow_row() {
        let mut conn = store();
        for i in 0..KEPT_TABLES + 3 {
            conn.execute(
                "INSERT INTO retention_tables (name, operations, deleted_records, errors, seq) \
                 VALUES (?1, 1, 2, 0, 1)",
                [format!("t{i:05}")],
            )
            .expect("row");
        }
        assert_eq!(fold_tables(&mut conn).expect("folded"), 3);
        assert_eq!(fold_tables(&mut conn).expect("again"), 0, "idempotent");
        let c = round_trip(&mut conn, &Delta::default(), 2, 0);
        assert_eq!(c.tables.len(), KEPT_TABLES + 1);
        assert_eq!(
            c.tables.last(),
            Some(&(
                TableLabel::Overflow,
                RetentionBucket {
                    operations: 3,
                    deleted_records: 6,
                    errors: 0
                }
            ))
        );
    }

    #[test]
    fn a_release_deletes_the_lock_and_an_older_configuration_loses() {
        let mut conn = store();
        let lock = LockEvent::new("digest", "w1").expect("valid");
        let mut d = Delta::default();
        d.lock(&lock.name, &lock.holder, Some(HeldLock::new(&lock, at(5))));
        let newer = CoveConfig::new(true, 0.7).expect("valid");
        d.set_cove(newer, at(1_000));
        assert_eq!(round_trip(&mut conn, &d, 1, 0).locks.len(), 1);

        let mut d = Delta::default();
        d.lock(&lock.name, &lock.holder, None);
        d.set_cove(CoveConfig::new(false, 0.1).expect("valid"), at(999));
        let c = round_trip(&mut conn, &d, 2, 1);
        assert!(c.locks.is_empty());
        assert_eq!(c.cove, Some((newer, at(1_000))));
        let locks_seq: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'locks_seq'", [], |r| {
                r.get(0)
            })
            .expect("read");
        assert_eq!(locks_seq, 2, "each write with lock changes moves it");
    }

    #[test]
    fn rows_with_names_that_are_not_valid_go_to_the_overflow_or_are_left_out() {
        let mut conn = store();
        conn.execute_batch(
            "INSERT INTO retention_tables (name, operations, deleted_records, errors, seq) \
             VALUES ('bad\nname', 1, 0, 0, 1), ('', 2, 0, 0, 1);
             INSERT INTO locks (name, holder, pid, host, acquired_at_ns) \
             VALUES ('', 'w1', NULL, NULL, 0), ('digest', 'w2', NULL, 'bad\thost', 0);",
        )
        .expect("rows");
        let c = round_trip(&mut conn, &Delta::default(), 1, 0);
        let tables: Vec<_> = c
            .tables
            .iter()
            .map(|(l, b)| (l.clone(), b.operations))
            .collect();
        assert_eq!(
            tables,
            [(TableLabel::Overflow, 1), (TableLabel::Overflow, 2)]
        );
        assert_eq!(
            c.locks.len(),
            1,
            "the lock without a valid name is left out"
        );
        assert_eq!(c.locks[0].holder, name("w2"));
        assert_eq!(c.locks[0].host, None, "an invalid host reads as unknown");
    }
}
