//! The two-level cache (work in progress).
pub mod l1;
