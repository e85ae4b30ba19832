//! Damage to a store file that only a full read can see (shared by
//! `reflexio-otel/tests/faults.rs` and `reflexio-bridge/tests/store_faults.rs`).

use std::path::Path;

/// Checkpoints the store at `path` into its main file, then overwrites every page of it but the
/// first (the schema) and the `meta` table's (what a poll with nothing new reads). Returns how
/// many pages the file has.
pub(crate) fn scramble_pages(path: &Path) -> usize {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let (page_size, meta): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT page_size FROM pragma_page_size), rootpage FROM sqlite_schema \
             WHERE name = 'meta'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("layout");
    drop(conn);
    let (page_size, meta) = (page_size as usize, meta as usize);
    let mut bytes = std::fs::read(path).expect("read");
    for (i, b) in bytes.iter_mut().enumerate() {
        let page = i / page_size + 1;
        if page != 1 && page != meta {
            *b = (i * 31 % 251) as u8;
        }
    }
    std::fs::write(path, &bytes).expect("damage");
    bytes.len() / page_size
}
