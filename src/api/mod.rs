//! HTTP endpoints that are not owned by a domain module: publishing,
//! operations, and the developer console.

pub mod console;
pub mod cors;
pub mod idempotency;
pub mod ops;
pub mod publish;
