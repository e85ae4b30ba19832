//! Reading a Prometheus text exposition back into samples, for the tests that check exported
//! values (shared by `reflexio-otel/tests/exposition.rs`, `reflexio-otel/tests/windows.rs` and,
//! through `support/store.rs`, `reflexio-otel/tests/store.rs` and `reflexio-otel/tests/faults.rs`).

use std::collections::BTreeMap;

/// Sample lines of an exposition: `name{labels}` -> value.
pub(crate) fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line has a value");
            (series.to_owned(), value.parse().expect("numeric sample"))
        })
        .collect()
}
