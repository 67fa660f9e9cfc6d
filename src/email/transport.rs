//! Where emails go: an SMTP server through lettre, or `.eml` files under
//! the data folder when no server is configured (the embedded default).

use std::{path::PathBuf, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{Header, HeaderName, HeaderValue},
    },
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
    /// Where the recipient opts out (absolute `http(s)`), for
    /// `List-Unsubscribe`; `None` for emails they cannot opt out of.
    pub list_unsubscribe: Option<&'a str>,
    /// An `https` address that unsubscribes on a bare POST (RFC 8058).
    pub one_click_unsubscribe: Option<&'a str>,
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

/// `Auto-Submitted: auto-generated` (RFC 3834): sent by a program, not a
/// person, so auto-responders do not answer it.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// `List-Unsubscribe: <url>, …` (RFC 2369): mail clients show an
/// "unsubscribe" action that uses the first address they can.
#[derive(Clone)]
struct ListUnsubscribe(Vec<String>);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(
            s.split(',')
                .map(|u| {
                    u.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                })
                .collect(),
        ))
    }
    fn display(&self) -> HeaderValue {
        let urls: Vec<String> = self.0.iter().map(|u| format!("<{u}>")).collect();
        HeaderValue::new(Self::name(), urls.join(", "))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058): the
/// `https` address of `List-Unsubscribe` unsubscribes on a bare POST, so a
/// mail client may do it for the user without opening a page.
#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".into())
    }
}

/// The message, with a `Message-ID` derived from the outbox row id so a
/// repeated send is the same message, `Auto-Submitted` always, and
/// `List-Unsubscribe` when the recipient may opt out: the one-click
/// address first when there is one (with `List-Unsubscribe-Post`), then
/// the preferences page.
fn build(from: &Mailbox, email: &Outgoing<'_>) -> Result<Message, String> {
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| format!("recipient address `{}` is invalid: {e}", email.to))?;
    let domain = from.email.domain().to_owned();
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject)
        .message_id(Some(format!("<{}@{domain}>", email.id)))
        .date(email.date)
        .header(AutoSubmitted);
    // Only an absolute web address makes sense in a mail client, and
    // one-click needs an `https` one.
    let one_click = email
        .one_click_unsubscribe
        .filter(|u| u.starts_with("https://") && is_web_url(u));
    let urls: Vec<String> = one_click
        .into_iter()
        .chain(email.list_unsubscribe.filter(|u| is_web_url(u)))
        .map(str::to_owned)
        .collect();
    if !urls.is_empty() {
        builder = builder.header(ListUnsubscribe(urls));
    }
    if one_click.is_some() {
        builder = builder.header(ListUnsubscribePost);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            email.text.to_owned(),
            email.html.to_owned(),
        ))
        .map_err(|e| format!("the message could not be built: {e}"))
}

fn is_web_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && !url.contains(|c: char| c.is_whitespace() || c == '>' || c.is_control())
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
            list_unsubscribe: None,
            one_click_unsubscribe: None,
            date: std::time::SystemTime::UNIX_EPOCH,
        };
        let raw = String::from_utf8(build(&from, &email).unwrap().formatted()).unwrap();
        assert!(raw.contains("Message-ID: <0190-abc@example.com>"), "{raw}");
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"), "{raw}");
        assert!(!raw.contains("List-Unsubscribe"), "{raw}");
        let with = |url| {
            let email = Outgoing {
                list_unsubscribe: Some(url),
                ..email
            };
            String::from_utf8(build(&from, &email).unwrap().formatted()).unwrap()
        };
        let raw = with("https://app.example.com/settings/notifications");
        assert!(
            raw.contains("List-Unsubscribe: <https://app.example.com/settings/notifications>\r\n"),
            "{raw}"
        );
        assert!(!raw.contains("List-Unsubscribe-Post"), "{raw}");
        // A relative link is no use in a mail client.
        assert!(!with("/settings/notifications").contains("List-Unsubscribe"));
        // One-click: its address first, and the POST header.
        let one_click = |url| {
            let email = Outgoing {
                list_unsubscribe: Some("https://app.example.com/settings/notifications"),
                one_click_unsubscribe: Some(url),
                ..email
            };
            String::from_utf8(build(&from, &email).unwrap().formatted()).unwrap()
        };
        let raw = one_click("https://app.example.com/api/v1/unsubscribe/abc.def");
        assert!(
            raw.contains(
                "List-Unsubscribe: <https://app.example.com/api/v1/unsubscribe/abc.def>,\r\n <https://app.example.com/settings/notifications>\r\n"
            ) || raw.contains(
                "List-Unsubscribe: <https://app.example.com/api/v1/unsubscribe/abc.def>, <https://app.example.com/settings/notifications>\r\n"
            ),
            "{raw}"
        );
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            "{raw}"
        );
        // Not over plain http: the RFC asks for https.
        let raw = one_click("http://app.example.com/api/v1/unsubscribe/abc.def");
        assert!(
            raw.contains("List-Unsubscribe: <https://app.example.com/settings/notifications>\r\n"),
            "{raw}"
        );
        assert!(!raw.contains("List-Unsubscribe-Post"), "{raw}");
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
