//! The SQLite store and the one thread that writes it.
//!
//! - `options`: where the store lives and how it is written ([`crate::StoreOptions`]);
//! - `health`: the store's state as of the last attempt ([`crate::StoreHealth`]);
//! - `schema`: the schema, its migrations, and the checks an opened file must pass;
//! - `rows`: the rows a delta writes, and what is read back;
//! - `files`: the store's files as opened, to notice one deleted or replaced underneath;
//! - `db`: an open store and its transactions;
//! - `writer`: the writer thread, which talks to the engine through its `Source` trait.
//!
//! Every value is additive (`value = value + excluded.value`), so processes that share a file
//! merge by addition. Each write transaction takes the next number of a global sequence and
//! stamps the rows it touches with it; a reader asks for the rows stamped after the last number
//! it saw and so learns the union of every process's writes without re-reading the window.

pub(crate) mod db;
pub(crate) mod files;
pub(crate) mod health;
pub(crate) mod options;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod writer;
