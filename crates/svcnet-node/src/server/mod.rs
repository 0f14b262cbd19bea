//! The node's HTTPS API (being written).
