//! A local OpenAI-compatible server for the assistant tests, speaking the
//! real streaming format: `data:` chunks of `chat.completion.chunk`, the
//! usage chunk when `stream_options.include_usage` is set, `data: [DONE]`.
//!
//! What it does is chosen by the first path segment of the provider's base
//! URL (`http://127.0.0.1:<port>/<mode>/v1`):
//! - `ok`: "Hello world!" in four tokens, then usage (11 + 4);
//! - `slow`: twenty tokens `w0 `…`w19 `, one every 100 ms;
//! - `fast`: a thousand tokens `t0 `…`t999 ` at once;
//! - `endless`: a token every 50 ms for a minute;
//! - `rate_limit` / `quota`: 429 with `rate_limit_exceeded` /
//!   `insufficient_quota`;
//! - `error500`: a 500;
//! - `stall`: accepts, then sends nothing for a minute;
//! - `cut`: two tokens, then drops the connection.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use futures_util::stream;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Seen {
    /// (mode, request body) of every request, in order.
    pub requests: Mutex<Vec<(String, Value)>>,
    /// Streams the client dropped before their end.
    pub dropped: AtomicUsize,
}

pub struct FakeOpenAi {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Seen>,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/{mode}/v1/chat/completions", post(completions))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOpenAi { addr, seen }
    }

    /// The base URL of a provider behaving as `mode`.
    pub fn base_url(&self, mode: &str) -> String {
        format!("http://{}/{mode}/v1", self.addr)
    }

    pub fn requests(&self, mode: &str) -> Vec<Value> {
        self.seen
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == mode)
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub fn dropped(&self) -> usize {
        self.seen.dropped.load(Ordering::SeqCst)
    }
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

/// Counts the stream as dropped unless it reached its end.
struct DropGuard {
    seen: Arc<Seen>,
    finished: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.seen.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

enum Step {
    Event(Value),
    Done,
    Wait(Duration),
    Cut,
}

async fn completions(
    State(seen): State<Arc<Seen>>,
    Path(mode): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    seen.requests
        .lock()
        .unwrap()
        .push((mode.clone(), body.clone()));
    let model = body["model"].as_str().unwrap_or("test").to_owned();
    let error = |status: StatusCode, kind: &str, code: Option<&str>| {
        (
            status,
            Json(json!({"error": {"message": format!("test {kind}"), "type": kind, "param": null, "code": code}})),
        )
            .into_response()
    };
    let tokens: Vec<String>;
    let mut delay = Duration::ZERO;
    let mut cut_after = None;
    match mode.as_str() {
        "rate_limit" => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
            );
        }
        "quota" => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                Some("insufficient_quota"),
            );
        }
        "error500" => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
        }
        "ok" => tokens = ["Hello", " ", "world", "!"].map(String::from).to_vec(),
        "slow" => {
            tokens = (0..20).map(|i| format!("w{i} ")).collect();
            delay = Duration::from_millis(100);
        }
        "fast" => tokens = (0..1000).map(|i| format!("t{i} ")).collect(),
        "endless" => {
            tokens = (0..1200).map(|i| format!("e{i} ")).collect();
            delay = Duration::from_millis(50);
        }
        "cut" => {
            tokens = ["Partial", " answer", " never", " ends"]
                .map(String::from)
                .to_vec();
            cut_after = Some(2);
        }
        "stall" => {
            tokens = vec!["late".into()];
            delay = Duration::from_secs(60);
        }
        _ => return (StatusCode::NOT_FOUND, "no such mode").into_response(),
    }
    let mut steps = vec![Step::Event(chunk(
        &model,
        json!({"role": "assistant", "content": ""}),
        None,
    ))];
    for (i, t) in tokens.iter().enumerate() {
        if cut_after == Some(i) {
            // Let the tokens reach the client before the connection drops.
            steps.push(Step::Wait(Duration::from_millis(200)));
            steps.push(Step::Cut);
            break;
        }
        if !delay.is_zero() {
            steps.push(Step::Wait(delay));
        }
        steps.push(Step::Event(chunk(&model, json!({"content": t}), None)));
    }
    steps.push(Step::Event(chunk(&model, json!({}), Some("stop"))));
    if body["stream_options"]["include_usage"] == true {
        steps.push(Step::Event(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": tokens.len(), "total_tokens": 11 + tokens.len()},
        })));
    }
    steps.push(Step::Done);
    let guard = DropGuard {
        seen,
        finished: false,
    };
    let steps = steps.into_iter();
    let body = stream::unfold((steps, guard), |(mut steps, mut guard)| async move {
        loop {
            match steps.next()? {
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Event(v) => {
                    let frame = Bytes::from(format!("data: {v}\n\n"));
                    return Some((Ok::<_, std::io::Error>(frame), (steps, guard)));
                }
                Step::Done => {
                    guard.finished = true;
                    return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (steps, guard)));
                }
                Step::Cut => {
                    guard.finished = true;
                    return Some((Err(std::io::Error::other("cut")), (steps, guard)));
                }
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}
