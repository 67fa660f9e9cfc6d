//! Integration tests over real sockets: one binary, one module per area.

mod assistant;
mod auth;
mod bad_input;
mod channels;
mod chat;
mod cli;
mod cluster;
mod delivery;
mod email;
mod extensions;
mod fake_openai;
mod helpers;
mod notifications;
mod operator;
mod planning;
mod publish;
mod queues;
mod smtp;
mod sse;
mod web_pages;
