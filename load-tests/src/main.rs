//! `relais-load`: load generator for the Relais WebSocket hub.
//!
//! Every run prints exactly one JSON line on stdout (the result, or
//! `{"scenario":..,"error":..}`), so scripts can capture it with `$(...)`;
//! everything else goes to stderr.

/// Writes one line to stderr with a single `write` call, so progress lines
/// of parallel worker processes sharing the terminal do not interleave
/// mid-line (unbuffered `eprintln!` writes in pieces).
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log_line(format!($($arg)*))
    };
}

mod cli;
mod http;
mod mint;
mod net;
mod pool;
mod provider;
mod scenarios;
mod stats;
mod workers;
mod ws;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_nofile_limit();

    let scenario = cli.command.scenario();
    let is_worker = cli.command.is_worker();
    let outcome = match cli.command {
        Command::Idle(args) => scenarios::idle::run(args).await,
        Command::Fanout(args) => scenarios::fanout::run(args).await,
        Command::Publish(args) => scenarios::publish::run(args).await,
        Command::NotifyFanout(args) => scenarios::notify_fanout::run(args).await,
        Command::Inbox(args) => scenarios::inbox::run(args).await,
        Command::Email(args) => scenarios::email::run(args).await,
        Command::QueueCounts(args) => scenarios::queue_counts::run(args).await,
        Command::Planning(args) => scenarios::planning::run(args).await,
        Command::Chat(args) => scenarios::chat::run(args).await,
        Command::Assistant(args) => scenarios::assistant::run(args).await,
        Command::Channels(args) => scenarios::channels::run(args).await,
        Command::Storm(args) => scenarios::storm::run(args).await,
        Command::Mint(args) => mint_command(&args),
    };
    match outcome {
        Ok(Some(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            log!("relais-load {scenario}: {e:#}");
            // Workers report to their parent through their own protocol;
            // only the top-level process owes a result line.
            if !is_worker {
                let line = ErrorLine {
                    scenario,
                    error: format!("{e:#}"),
                };
                match serde_json::to_string(&line) {
                    Ok(line) => println!("{line}"),
                    Err(_) => println!(r#"{{"scenario":"{scenario}","error":"unprintable"}}"#),
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// `relais-load mint`: `{"token":..,"exp":..}` for one seeded user.
fn mint_command(args: &cli::MintArgs) -> anyhow::Result<Option<String>> {
    let secret = mint::secret_from_env(&args.jwt_secret_env)?;
    let token =
        mint::Minter::new(&secret, &args.tenant, args.ttl_secs).token(&args.user, &args.session)?;
    let exp = mint::verify(&secret, &token)?.exp;
    Ok(Some(
        serde_json::json!({"token": token, "exp": exp}).to_string(),
    ))
}

fn log_line(mut line: String) {
    use std::io::Write;
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The result line of a run that failed before producing a result.
#[derive(serde::Serialize)]
struct ErrorLine {
    scenario: &'static str,
    error: String,
}

/// Raises the soft open-files limit to the hard limit: every WebSocket is a
/// file descriptor and the default soft limit (often 1024) is far too low.
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log!("open files limit: {limit}"),
        Err(e) => log!("cannot raise open files limit: {e}"),
    }
}
