//! The `kvstore` command line.

pub mod offline;
