//! A fake OpenAI-compatible provider for the `assistant` scenario, and the
//! token format it streams.
//!
//! `POST /v1/chat/completions` answers `text/event-stream` in the format the
//! hub parses (`chat.completion.chunk` objects on `data:` lines, a finish
//! chunk, a usage chunk when `stream_options.include_usage` is set, then
//! `data: [DONE]`): `tokens` tokens paced at `tokens_per_sec` on absolute
//! deadlines from the request's arrival (open loop: a late token does not
//! push the later ones back). Each token's text is ` <stream>.<n>.<micros>;`:
//! the stream number (read from the question, `bench stream <stream>`), the
//! token's index from 0, and its send time in microseconds since
//! [`anchor`], taken right before the chunk is handed to the connection.
//! Everything that reads tokens lives in this process, so one monotonic
//! clock serves both ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The instant every token timestamp counts from.
pub fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// Microseconds since [`anchor`].
pub fn now_micros() -> u64 {
    anchor().elapsed().as_micros() as u64
}

/// The question that tells the provider which stream it serves.
pub fn question(stream: usize) -> String {
    format!("bench stream {stream}")
}

/// The text of token `n` of `stream`, sent at `micros`.
pub fn token_text(stream: u64, n: u64, micros: u64) -> String {
    format!(" {stream}.{n}.{micros};")
}

/// One token parsed back out of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub stream: u64,
    pub n: u64,
    pub sent_us: u64,
}

/// Parses tokens out of texts that arrive in pieces: a frame may hold
/// several tokens, and a token may (in principle) be split across frames,
/// so whatever follows the last `;` waits for the next piece.
#[derive(Debug, Default)]
pub struct TokenParser {
    carry: String,
    /// Pieces between `;` that were not a token.
    pub malformed: u64,
}

impl TokenParser {
    /// Adds `text` and calls `each` for every token it completes.
    pub fn feed(&mut self, text: &str, mut each: impl FnMut(Token)) {
        self.carry.push_str(text);
        let Some(end) = self.carry.rfind(';') else {
            return;
        };
        for piece in self.carry[..end].split(';') {
            match parse_token(piece) {
                Some(token) => each(token),
                None => self.malformed += 1,
            }
        }
        self.carry.drain(..=end);
    }

    /// Text received after the last complete token.
    pub fn rest(&self) -> &str {
        &self.carry
    }
}

fn parse_token(piece: &str) -> Option<Token> {
    let mut parts = piece.trim().splitn(3, '.');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some(Token {
        stream: next()?,
        n: next()?,
        sent_us: next()?,
    })
}

/// How the provider paces its answers.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub tokens: u64,
    pub tokens_per_sec: u32,
}

/// What the provider saw, for the result line.
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub requests: AtomicU64,
    pub tokens_sent: AtomicU64,
    /// Streams the client closed before `[DONE]`.
    pub cut: AtomicU64,
    /// Largest lag of a send behind its deadline, in microseconds.
    pub max_lag_us: AtomicU64,
    /// Sends more than 5 ms behind their deadline (the generator is
    /// overloaded, or the reader applies back-pressure).
    pub late_sends: AtomicU64,
}

/// A running fake provider.
pub struct FakeProvider {
    pub addr: SocketAddr,
    pub stats: Arc<ProviderStats>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

impl FakeProvider {
    /// Listens on a free loopback port.
    pub async fn start(pacing: Pacing) -> Result<Self> {
        anchor();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the fake provider")?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProviderStats::default());
        let conns = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
        let task = {
            let stats = Arc::clone(&stats);
            let conns = Arc::clone(&conns);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let stats = Arc::clone(&stats);
                    let service = hyper::service::service_fn(move |req| {
                        let stats = Arc::clone(&stats);
                        async move { Ok::<_, Infallible>(handle(req, pacing, stats).await) }
                    });
                    let mut set = conns.lock().unwrap_or_else(PoisonError::into_inner);
                    // Reap finished connections so the set stays small.
                    while set.try_join_next().is_some() {}
                    set.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self {
            addr,
            stats,
            task,
            conns,
        })
    }

    /// The provider's `base_url` for the hub.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
    }
}

/// A response body fed chunk by chunk from a channel.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<ChannelBody> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Bytes::from_static(text.as_bytes()));
    let mut response = Response::new(ChannelBody(rx));
    *response.status_mut() = status;
    response
}

async fn handle(
    req: Request<Incoming>,
    pacing: Pacing,
    stats: Arc<ProviderStats>,
) -> Response<ChannelBody> {
    let arrived = tokio::time::Instant::now();
    if req.method() != Method::POST || req.uri().path() != "/v1/chat/completions" {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    let Ok(body) = req.into_body().collect().await else {
        return plain(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return plain(StatusCode::BAD_REQUEST, "not JSON");
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let model = body["model"].as_str().unwrap_or("bench").to_owned();
    let usage = body["stream_options"]["include_usage"] == true;
    let stream = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .and_then(|q| q.strip_prefix("bench stream "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(stream_tokens(
        tx, arrived, model, stream, usage, pacing, stats,
    ));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(ChannelBody(rx))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let v = json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    Bytes::from(format!("data: {v}\n\n"))
}

async fn stream_tokens(
    tx: mpsc::Sender<Bytes>,
    start: tokio::time::Instant,
    model: String,
    stream: u64,
    usage: bool,
    pacing: Pacing,
    stats: Arc<ProviderStats>,
) {
    let period = Duration::from_secs(1) / pacing.tokens_per_sec.max(1);
    let cut = |stats: &ProviderStats| {
        stats.cut.fetch_add(1, Ordering::Relaxed);
    };
    if tx
        .send(chunk(
            &model,
            json!({"role": "assistant", "content": ""}),
            None,
        ))
        .await
        .is_err()
    {
        return cut(&stats);
    }
    for n in 0..pacing.tokens {
        let due = start + period * (n as u32 + 1);
        tokio::time::sleep_until(due).await;
        // Wait for room first, so the timestamp is taken when the chunk
        // really leaves for the connection.
        let Ok(permit) = tx.reserve().await else {
            return cut(&stats);
        };
        let lag = tokio::time::Instant::now().saturating_duration_since(due);
        let lag_us = lag.as_micros() as u64;
        stats.max_lag_us.fetch_max(lag_us, Ordering::Relaxed);
        if lag > Duration::from_millis(5) {
            stats.late_sends.fetch_add(1, Ordering::Relaxed);
        }
        let text = token_text(stream, n, now_micros());
        permit.send(chunk(&model, json!({"content": text}), None));
        stats.tokens_sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut tail = vec![chunk(&model, json!({}), Some("stop"))];
    if usage {
        let v = json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": pacing.tokens,
                      "total_tokens": 10 + pacing.tokens},
        });
        tail.push(Bytes::from(format!("data: {v}\n\n")));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    for bytes in tail {
        if tx.send(bytes).await.is_err() {
            return cut(&stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(parser: &mut TokenParser, text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        parser.feed(text, |t| out.push(t));
        out
    }

    #[test]
    fn several_tokens_in_one_frame() {
        let mut p = TokenParser::default();
        let text = format!(
            "{}{}{}",
            token_text(3, 0, 10),
            token_text(3, 1, 20),
            token_text(3, 2, 35)
        );
        let tokens = collect(&mut p, &text);
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens[2],
            Token {
                stream: 3,
                n: 2,
                sent_us: 35
            }
        );
        assert_eq!(p.rest(), "");
        assert_eq!(p.malformed, 0);
    }

    #[test]
    fn a_token_split_across_frames() {
        let mut p = TokenParser::default();
        let text = format!("{}{}", token_text(7, 0, 1000), token_text(7, 1, 123_456));
        let (a, b) = text.split_at(text.len() - 5);
        let first = collect(&mut p, a);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].n, 0);
        assert!(collect(&mut p, "").is_empty());
        let second = collect(&mut p, b);
        assert_eq!(
            second,
            vec![Token {
                stream: 7,
                n: 1,
                sent_us: 123_456
            }]
        );
        // Split inside the separator itself, and mid-number.
        let mut p = TokenParser::default();
        let mut got = Vec::new();
        for piece in [" 1.", "4.", "99", ";", " 1.5", ".100; 1.6.2", "00;"] {
            got.extend(collect(&mut p, piece));
        }
        let ns: Vec<_> = got.iter().map(|t| (t.n, t.sent_us)).collect();
        assert_eq!(ns, vec![(4, 99), (5, 100), (6, 200)]);
        assert_eq!(p.malformed, 0);
    }

    #[test]
    fn garbage_between_tokens_is_counted() {
        let mut p = TokenParser::default();
        let tokens = collect(&mut p, "hello; 1.0.5;x.y.z;");
        assert_eq!(tokens.len(), 1);
        assert_eq!(p.malformed, 2);
    }
}
