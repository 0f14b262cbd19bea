//! The node's network plumbing (being written).
