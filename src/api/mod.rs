//! REST endpoints that are not owned by a domain module: publishing and operations.

pub mod idempotency;
pub mod ops;
pub mod publish;
