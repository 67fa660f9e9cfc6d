//! Authentication and authorisation: passwords, tokens, sessions, API keys,
//! roles, and the extractors handlers use to learn who is calling.

pub mod extract;
pub mod key_cache;
pub mod password;
pub mod principal;
pub mod rbac;
pub mod routes;
pub mod service;
pub mod tokens;

pub use principal::{Caller, KeyHolder, Principal, Scope};
pub use rbac::{Permission, Role};
pub use service::AuthService;
