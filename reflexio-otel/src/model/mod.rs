//! Value types shared by every layer above: window buckets and the rolling windows, histogram
//! layouts and counts, process locks, totals and table labels, the changes waiting for the
//! store and the ones read back from it. Nothing here does I/O, takes a lock or reads a clock,
//! but for `locks`, which asks the system for this host's name and whether a process is alive.
//!
//! - `count`: the rule every count and sum follows (it stops at the largest stored integer);
//! - `bucket`: one minute of facts or retention runs, and the window ratios and means;
//! - `window`: the ring of minute buckets with its running sum;
//! - `histogram`: bucket layouts, cumulative counts, replay values;
//! - `locks`: held process locks and their registry;
//! - `totals`: cumulative counts and the `table` label;
//! - `history`: counts of past events, added to the totals and to no window;
//! - `delta`: changes not yet in the store;
//! - `changes`: what the store returns, and checkpoints of sources read exactly once.

pub(crate) mod bucket;
pub(crate) mod changes;
pub(crate) mod count;
pub(crate) mod delta;
pub(crate) mod histogram;
pub(crate) mod history;
pub(crate) mod locks;
pub(crate) mod totals;
pub(crate) mod window;
