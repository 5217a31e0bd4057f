//! Helpers shared by the system tests.
pub mod cfn;
