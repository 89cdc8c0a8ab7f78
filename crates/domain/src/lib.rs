//! The pure core of Patron: domain types, exact money, and (later) the
//! analytics models and the segment language. No I/O, no async runtime.

pub mod activity;
pub mod campaign;
pub mod customer;
pub mod error;
pub mod feedback;
pub mod filter;
pub mod models;
pub mod money;
pub mod segment;

pub use error::{ApiError, ErrorCode, FieldViolation, Violations};
pub use money::{Currency, Money};
