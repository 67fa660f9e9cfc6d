//! Integration tests over real sockets: one binary, one module per area.

mod auth;
mod bad_input;
mod channels;
mod cli;
mod cluster;
mod delivery;
mod helpers;
mod publish;
mod sse;
