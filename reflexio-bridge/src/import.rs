//! `import`: a one-shot backfill of an existing deployment's database into the store — every row
//! into the totals, the last 7 days into the windows — with a progress bar on a terminal and
//! plain progress lines otherwise. It moves the same cursors as a running bridge, so running it
//! twice, or next to `serve`, counts no row twice.

use crate::cli::ImportArgs;
use crate::config::{Config, UsageError};
use crate::legacy::{AppDb, Counts, Follower, Found, Table, log_schema};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Progress in row ids, drawn as a bar or printed as lines.
enum Progress {
    Bar(ProgressBar),
    Lines {
        total: u64,
        done: u64,
        printed: Instant,
    },
}

impl Progress {
    fn new(total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg:>20} [{bar:40}] {human_pos}/{human_len} rows ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            eprintln!("import: {total} rows to read");
            Progress::Lines {
                total,
                done: 0,
                printed: Instant::now(),
            }
        }
    }

    fn advance(&mut self, table: Table, by: u64) {
        match self {
            Progress::Bar(bar) => {
                bar.set_message(table.name());
                bar.inc(by);
            }
            Progress::Lines {
                total,
                done,
                printed,
            } => {
                *done = (*done + by).min(*total);
                if printed.elapsed() >= LINE_EVERY {
                    *printed = Instant::now();
                    let percent = (*done * 100).checked_div(*total).unwrap_or(100);
                    eprintln!("import: {table}: {done}/{total} rows ({percent}%)");
                }
            }
        }
    }

    fn finish(self) {
        match self {
            Progress::Bar(bar) => bar.finish_and_clear(),
            Progress::Lines { total, .. } => eprintln!("import: {total}/{total} rows (100%)"),
        }
    }
}

pub(crate) fn run(args: ImportArgs) -> anyhow::Result<()> {
    let config = Config::resolve(args.into(), |var| std::env::var(var).ok())?;
    let Some((path, zone)) = config
        .legacy
        .as_ref()
        .and_then(|l| Some((l.db.clone()?, l.zone.clone())))
    else {
        return Err(
            UsageError("import needs --legacy-db PATH: the application's database".into()).into(),
        );
    };
    // A write past the file size limit must fail with an error, not kill the import.
    crate::limits::watch_file_size_signal()?;
    let recorder = config.recorder()?;
    if let Some(e) = recorder.store_health().and_then(|h| h.last_error) {
        anyhow::bail!("cannot import into the store: {e}");
    }
    let db = AppDb::open(&path, zone).context("cannot open the application's database")?;
    log_schema(&db);
    let mut follower = Follower::new(db, recorder.clone());
    let backlog = follower.backlog()?.iter().map(|(_, n)| n).sum();
    let mut progress = Progress::new(backlog);
    let started = Instant::now();
    let mut totals: BTreeMap<Table, Counts> = BTreeMap::new();
    let result = follower.poll(recorder.now(), &mut |table, counts| {
        totals.entry(table).or_default().add(counts);
        progress.advance(table, counts.advanced);
    });
    progress.finish();
    let elapsed = started.elapsed();
    // Whatever was committed stays committed: report it, then the error.
    recorder.shutdown().context("cannot close the store")?;
    for (table, found) in follower.db().found() {
        if matches!(found, Found::Followed { .. }) {
            totals.entry(table).or_default();
        }
    }
    print_summary(&path, &config.store, &totals, elapsed);
    result.context("the import stopped")?;
    Ok(())
}

fn print_summary(
    db: &std::path::Path,
    store: &std::path::Path,
    totals: &BTreeMap<Table, Counts>,
    elapsed: Duration,
) {
    let mut all = Counts::default();
    println!(
        "imported {} into {} (rows older than 7 days count in the totals only; rows read \
         before are skipped):",
        db.display(),
        store.display()
    );
    println!(
        "  {:<20} {:>10} {:>10} {:>14} {:>16} {:>14}",
        "table", "read", "counted", "older than 7d", "timestamp errors", "invalid values"
    );
    for (table, c) in totals {
        all.add(c);
        println!(
            "  {:<20} {:>10} {:>10} {:>14} {:>16} {:>14}",
            table.name(),
            c.rows,
            c.recorded,
            c.too_old,
            c.timestamp_errors,
            c.invalid_values
        );
    }
    let rate = all.rows as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "  {} rows read in {:.2}s ({:.0} rows/s){}",
        all.rows,
        elapsed.as_secs_f64(),
        rate,
        if all.rows == 0 {
            "; nothing new since the last import"
        } else {
            ""
        }
    );
}
