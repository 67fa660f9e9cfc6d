//! One streaming chat completion from an OpenAI-compatible provider, read
//! in the run's own task.
//!
//! The request and chunk types are async-openai's. The HTTP exchange is
//! ours: async-openai's client reads a stream in a task of its own and
//! hands each event over through an unbounded channel, a queue on the
//! token path with no bound and one more task switch per token. Here the
//! response body is parsed as server-sent events where the run polls it,
//! so a slow run reads slower and the provider's TCP window pushes back.

use std::pin::Pin;

use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionStreamResponse};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::header;

use super::run::Failure;

/// The chunks of an answer, until `data: [DONE]` or the end of the body.
pub type Chunks =
    Pin<Box<dyn Stream<Item = Result<CreateChatCompletionStreamResponse, Failure>> + Send>>;

/// Longest error body read from a provider that refuses a request.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Sends `request` with `stream: true` to `{base_url}/chat/completions`;
/// answers the chunk stream, or why the provider refused.
pub async fn open(
    http: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    request: &CreateChatCompletionRequest,
) -> Result<Chunks, Failure> {
    let mut request = request.clone();
    request.stream = Some(true);
    let body = serde_json::to_vec(&request).map_err(|e| Failure::Protocol(e.to_string()))?;
    let mut call = http
        .post(format!(
            "{}/chat/completions",
            base_url.trim_end_matches('/')
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .body(body);
    if !api_key.is_empty() {
        call = call.bearer_auth(api_key);
    }
    let response = call.send().await.map_err(Failure::transport)?;
    let status = response.status();
    if !status.is_success() {
        let mut body = Vec::new();
        let mut bytes = response.bytes_stream();
        while let Some(Ok(piece)) = bytes.next().await {
            body.extend_from_slice(&piece);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        return Err(Failure::refusal(status.as_u16(), &body));
    }
    let events = response.bytes_stream().eventsource();
    Ok(Box::pin(futures_util::stream::unfold(
        Some(events),
        |events| async move {
            let mut events = events?;
            loop {
                let event = match events.next().await? {
                    Ok(event) => event,
                    Err(e) => return Some((Err(Failure::Connection(e.to_string())), None)),
                };
                if event.data == "[DONE]" {
                    return None;
                }
                if event.event == "keepalive" || event.data.is_empty() {
                    continue;
                }
                let chunk = serde_json::from_str::<CreateChatCompletionStreamResponse>(&event.data)
                    .map_err(|e| Failure::Protocol(e.to_string()));
                return Some((chunk, Some(events)));
            }
        },
    )))
}
