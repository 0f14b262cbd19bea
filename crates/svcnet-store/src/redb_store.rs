//! The embedded backend on redb.
//!
//! OWNER: helper "store" fills this in.

/// A [`crate::Storage`] in one redb file.
pub struct RedbStore {}
