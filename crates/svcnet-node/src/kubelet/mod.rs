//! The pod runtime (being written).
