//! Helpers shared by the system tests.
pub mod cfn;
pub mod demo;
