//! Where emails go: an SMTP server through lettre, or `.eml` files under
//! the data folder when no server is configured (the embedded default).

use std::{path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};
use secrecy::ExposeSecret;

use crate::config::{EmailConfig, SmtpConfig, SmtpTls};

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted; the server's reply (code and text) for the attempt log.
    Sent { code: Option<u16>, reply: String },
    /// Worth retrying: 4xx replies, timeouts, dropped connections.
    Transient { code: Option<u16>, reply: String },
    /// Retrying will not help: 5xx replies, an unusable address.
    Permanent { code: Option<u16>, reply: String },
}

/// The parts of an email the transport needs.
pub struct Outgoing<'a> {
    pub id: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    pub html: &'a str,
    pub date: std::time::SystemTime,
}

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

impl Transport {
    pub fn new(config: &EmailConfig, data_dir: &std::path::Path) -> anyhow::Result<Transport> {
        match &config.smtp {
            Some(smtp) => Ok(Transport::Smtp(smtp_transport(smtp)?)),
            None => Ok(Transport::Files(data_dir.join("mail"))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(_) => "SMTP".into(),
            Transport::Files(dir) => format!("files in {}", dir.display()),
        }
    }

    pub async fn send(&self, from: &Mailbox, email: &Outgoing<'_>) -> Outcome {
        let message = match build(from, email) {
            Ok(m) => m,
            Err(reply) => return Outcome::Permanent { code: None, reply },
        };
        match self {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => Outcome::Sent {
                    code: Some(u16::from(response.code())),
                    reply: response.message().collect::<Vec<_>>().join(" "),
                },
                Err(e) => {
                    let code = e.status().map(u16::from);
                    let reply = error_chain(&e);
                    if e.is_permanent() {
                        Outcome::Permanent { code, reply }
                    } else {
                        Outcome::Transient { code, reply }
                    }
                }
            },
            Transport::Files(dir) => match write_file(dir, email.id, &message.formatted()).await {
                Ok(path) => Outcome::Sent {
                    code: None,
                    reply: format!("written to {}", path.display()),
                },
                Err(e) => Outcome::Transient {
                    code: None,
                    reply: format!("writing the email file failed: {e}"),
                },
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn smtp_transport(c: &SmtpConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder = match c.tls {
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
    };
    let mut builder = builder.port(c.port).timeout(Some(c.timeout));
    if let (Some(user), Some(password)) = (&c.username, &c.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// The message, with a `Message-ID` derived from the outbox row id so a
/// repeated send is the same message.
fn build(from: &Mailbox, email: &Outgoing<'_>) -> Result<Message, String> {
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| format!("recipient address `{}` is invalid: {e}", email.to))?;
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject)
        .message_id(Some(format!("<{}@{domain}>", email.id)))
        .date(email.date)
        .multipart(MultiPart::alternative_plain_html(
            email.text.to_owned(),
            email.html.to_owned(),
        ))
        .map_err(|e| format!("the message could not be built: {e}"))
}

/// Writes atomically under a name derived from the email id, so writing the
/// same email again replaces it rather than adding a second one.
async fn write_file(dir: &std::path::Path, id: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{id}.eml"));
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

/// The delay before retry number `attempt` (1-based): `base · 2^(attempt-1)`
/// capped at `max`, then scaled by a random factor in [0.5, 1] so retries
/// from many nodes do not arrive together.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    use rand::RngExt;
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(300);
        for attempt in 1..=10 {
            let d = backoff(base, max, attempt);
            let full = (base * (1 << (attempt - 1))).min(max);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn message_id_is_stable_and_bodies_are_alternatives() {
        let from: Mailbox = "Relais <relais@example.com>".parse().unwrap();
        let email = Outgoing {
            id: "0190-abc",
            to: "awa@example.com",
            subject: "Sujet é",
            text: "texte",
            html: "<p>html</p>",
            date: std::time::SystemTime::UNIX_EPOCH,
        };
        let raw = String::from_utf8(build(&from, &email).unwrap().formatted()).unwrap();
        assert!(raw.contains("Message-ID: <0190-abc@example.com>"), "{raw}");
        assert!(raw.contains("multipart/alternative"));
        assert!(
            build(
                &from,
                &Outgoing {
                    to: "not an address",
                    ..email
                }
            )
            .is_err()
        );
    }
}
