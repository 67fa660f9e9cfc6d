//! The assistant: per-tenant LLM assistants whose answers stream token by
//! token to every device of the user, with a chain of fallback providers.
//!
//! A tenant admin adds **providers** (any OpenAI-compatible endpoint: a base
//! URL and an API key, stored encrypted, [`crypto`]) and **assistants**
//! (instructions, model, temperature, the ordered provider chain). A user
//! opens a **conversation** with an assistant; each message they send
//! (REST or the `assistant.send` RPC) starts a **run** ([`run`]) on the node
//! that received it: each coalesced frame of tokens is published on
//! `assistant:<conversation>` at once, and the answer's row (the text so
//! far) is saved in the background every half second, in batches
//! ([`saver`]). A device that subscribes late gets the text so far in the
//! snapshot (the saved text completed from the channel's history) and
//! applies the later frames by their `seq`: no gap, no duplicate.
//!
//! A provider that fails before the first token (rate limit, quota, 5xx,
//! connection error, first-token timeout) hands over to the next one, and
//! the tenant's admins get an `assistant.fallback` notification (at most
//! one per assistant and provider per interval). A failure after tokens
//! streamed stores the answer as incomplete, with the error. A cancel
//! (`assistant.cancel` or REST) is a control message to every node: the
//! one running the answer drops the upstream request.

pub mod crypto;
pub mod routes;
pub mod run;
pub mod saver;
pub mod steps;
pub mod store;
pub mod upstream;
pub mod widget;

use std::sync::{Arc, Weak};

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Principal,
    bus::{Control, Position},
    channels::{Access, AccessCheck, ChannelKey, ChannelName, HistoryPolicy, KeyRule, Namespace},
    config::AssistantConfig,
    error::ApiError,
    extension::{DomainError, ErrorKind, RpcCall, RpcHandler, SnapshotSource, method_not_found},
    gateway::Gateway,
    metrics::Metrics,
    module::{Context, Module, Worker},
    store::Store,
};

/// The channel namespace of conversations: `assistant:<conversation id>`.
pub const NAMESPACE: &str = "assistant";
/// What a conversation's channel keeps for `recover`, and where the
/// snapshot finds the frames the store has not saved yet: 128 publications
/// hold about twice the frames that can be published before a save lands
/// (about 600 ms, see [`saver::BATCH_EVERY`]) at the default 10 ms frame
/// interval, and more at the pace models stream tokens.
const HISTORY: HistoryPolicy = HistoryPolicy {
    size: 128,
    ttl: std::time::Duration::from_secs(600),
};
/// Longest user message, in characters.
pub const MAX_TEXT: usize = 16_000;
/// Messages of a conversation sent to the model as context, at most.
pub const CONTEXT_MESSAGES: i64 = 40;

/// The assistant module.
pub fn module(ctx: &Context<'_>) -> anyhow::Result<Arc<dyn Module>> {
    // The OpenAI client speaks TLS through rustls with the ring provider
    // the rest of the hub uses; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runs = Arc::new(Runs::default());
    let engine = Arc::new(Engine {
        store: ctx.store.clone(),
        config: ctx.config.assistant.clone(),
        cipher: ctx
            .config
            .assistant
            .encryption_key
            .as_ref()
            .map(crypto::Cipher::new),
        metrics: ctx.metrics.clone(),
        notify: ctx.state.notify.clone(),
        gateway: Arc::downgrade(&ctx.gateway),
        auth: ctx.auth.clone(),
        runs: runs.clone(),
        saver: saver::ProgressSaver::default(),
        notified: DashMap::new(),
        http: std::sync::OnceLock::new(),
    });
    ctx.control.on::<CancelRun>({
        let runs = runs.clone();
        move |m| runs.cancel(&m.run)
    });
    Ok(Arc::new(AssistantModule { engine }))
}

/// The runs this node is streaming, by answer id.
#[derive(Default)]
pub struct Runs(DashMap<String, CancellationToken>);

impl Runs {
    pub fn cancel(&self, run: &str) {
        if let Some(token) = self.0.get(run) {
            token.cancel();
        }
    }
}

/// "Stop streaming answer `run`", for every node.
#[derive(Serialize, Deserialize)]
pub struct CancelRun {
    pub run: String,
}

impl Control for CancelRun {
    const TOPIC: &'static str = "assistant.cancel_run";
}

/// What routes, the RPC handler and runs share.
pub struct Engine {
    pub store: Store,
    pub config: AssistantConfig,
    /// `None` when no encryption key is configured.
    pub cipher: Option<crypto::Cipher>,
    pub metrics: Arc<Metrics>,
    pub notify: Arc<crate::notify::Notify>,
    /// Runs publish through it; weak, as the gateway holds the RPC handler.
    pub gateway: Weak<Gateway>,
    /// Starts and checks widget visitors' sessions.
    pub auth: Arc<crate::auth::AuthService>,
    pub runs: Arc<Runs>,
    /// Writes streaming answers' text so far, batched.
    pub saver: saver::ProgressSaver,
    /// Last `assistant.fallback` notification per `tenant/assistant/provider`.
    notified: DashMap<String, std::time::Instant>,
    /// One HTTP client for every provider (connection pools, TLS roots),
    /// built on first use.
    http: std::sync::OnceLock<reqwest::Client>,
}

impl Engine {
    fn http(&self) -> reqwest::Client {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }
}

struct AssistantModule {
    engine: Arc<Engine>,
}

impl Module for AssistantModule {
    fn name(&self) -> &'static str {
        "assistant"
    }

    fn extend(&self, extensions: &mut crate::gateway::Extensions) {
        let owner = Access::Check(Arc::new(Owner(self.engine.store.clone())));
        extensions.channels.register(Namespace {
            name: NAMESPACE,
            key: KeyRule::Required,
            subscribe: owner,
            publish: Access::Nobody,
            presence: Access::Nobody,
            join_leave: false,
            history: HISTORY,
            hook: None,
            snapshot: Some(Arc::new(Snapshot {
                store: self.engine.store.clone(),
                gateway: self.engine.gateway.clone(),
            })),
        });
        extensions.rpc(
            NAMESPACE,
            Arc::new(AssistantRpc(Arc::downgrade(&self.engine))),
        );
    }

    fn router(&self) -> axum::Router<crate::state::AppState> {
        routes::router()
            .merge(widget::router())
            .layer(axum::Extension(self.engine.clone()))
    }

    fn workers(&self, stop: &CancellationToken) -> Vec<Worker> {
        let engine = self.engine.clone();
        let stop_saving = stop.clone();
        vec![
            Box::pin(run::purge_loop(self.engine.clone(), stop.clone())),
            Box::pin(async move {
                engine.saver.run(engine.store.clone(), stop_saving).await;
            }),
        ]
    }
}

/// Only the conversation's user subscribes to it.
struct Owner(Store);

impl AccessCheck for Owner {
    fn allows<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            let Some(id) = channel.key() else {
                return Ok(false);
            };
            let conversation = store::conversation(&self.0, who.tenant.as_str(), id).await?;
            Ok(conversation.is_some_and(|c| c.user_id == who.user.as_str()))
        })
    }
}

/// The conversation's latest messages, the answer in flight included with
/// its text so far and `delta_seq`.
///
/// A streaming answer is saved every half second, not at every frame, so
/// its stored text may lack the last frames. They are in the channel's
/// history: the snapshot appends the deltas that follow the saved
/// `delta_seq`, in order, so the text it gives holds every frame published
/// before the subscriber's position (and maybe later ones, which the device
/// then skips by their `seq`).
pub(crate) struct Snapshot {
    store: Store,
    gateway: Weak<Gateway>,
}

impl SnapshotSource for Snapshot {
    fn snapshot<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelKey,
        _at: &'a Position,
        _params: Option<&'a RawValue>,
    ) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>> {
        Box::pin(async move {
            let id = channel.name().key().unwrap_or_default();
            let mut messages =
                store::messages(&self.store, channel.tenant().as_str(), id, None, 50)
                    .await
                    .map_err(DomainError::internal)?;
            if messages.iter().any(|m| m.status == "streaming")
                && let Some(gateway) = self.gateway.upgrade()
            {
                let recent = gateway
                    .broker
                    .latest(channel, HISTORY, HISTORY.size)
                    .await
                    .map_err(DomainError::internal)?;
                let frames = recent.publications.iter().map(|p| p.frame.as_str());
                catch_up(&mut messages, frames);
            }
            if who.is_visitor() {
                run::hide_errors(&mut messages);
            }
            raw(&json!({"messages": messages}))
        })
    }
}

/// Appends to each streaming message the deltas of `frames` (encoded
/// publications, oldest first) that continue its `delta_seq`.
fn catch_up<'a>(messages: &mut [Message], frames: impl Iterator<Item = &'a str>) {
    #[derive(Deserialize)]
    struct Frame<'f> {
        #[serde(borrow)]
        data: Delta<'f>,
    }
    #[derive(Deserialize)]
    struct Delta<'f> {
        #[serde(rename = "type")]
        kind: &'f str,
        #[serde(default)]
        message: Option<&'f str>,
        #[serde(default)]
        seq: i64,
        #[serde(default)]
        text: Option<std::borrow::Cow<'f, str>>,
    }
    for frame in frames {
        let Ok(Frame { data }) = serde_json::from_str::<Frame<'_>>(frame) else {
            continue;
        };
        if data.kind != "assistant.delta" {
            continue;
        }
        let Some(m) = messages
            .iter_mut()
            .find(|m| m.status == "streaming" && Some(m.id.as_str()) == data.message)
        else {
            continue;
        };
        if data.seq == m.delta_seq + 1 {
            m.content.push_str(data.text.as_deref().unwrap_or_default());
            m.delta_seq = data.seq;
        }
    }
}

/// `assistant.send {conversation, text}` and `assistant.cancel {run}`.
struct AssistantRpc(Weak<Engine>);

#[derive(Deserialize)]
struct SendArgs {
    conversation: String,
    text: String,
    /// The guided step the message answers, if the client shows one.
    #[serde(default)]
    step: Option<String>,
}

#[derive(Deserialize)]
struct CancelArgs {
    run: String,
}

fn args<T: serde::de::DeserializeOwned>(data: Option<&RawValue>) -> Result<T, DomainError> {
    serde_json::from_str(data.map_or("null", RawValue::get))
        .map_err(|e| DomainError::invalid("invalid_request", e.to_string()))
}

impl RpcHandler for AssistantRpc {
    fn call<'a>(&'a self, call: RpcCall<'a>) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>> {
        Box::pin(async move {
            let engine = self
                .0
                .upgrade()
                .ok_or_else(|| DomainError::internal("assistant stopped"))?;
            match call.method {
                "assistant.send" => {
                    let a: SendArgs = args(call.data)?;
                    let started = engine
                        .send(call.who, &a.conversation, &a.text, a.step.as_deref())
                        .await?;
                    raw(&started)
                }
                "assistant.cancel" => {
                    let a: CancelArgs = args(call.data)?;
                    engine.cancel(call.who, &a.run).await?;
                    raw(&json!({"cancelled": a.run}))
                }
                other => Err(method_not_found(other)),
            }
        })
    }
}

/// A name of a provider, assistant or widget, trimmed: 1-100 characters.
pub(crate) fn valid_name(name: &str) -> Result<&str, AssistantError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AssistantError::Invalid("name: 1-100 characters".into()));
    }
    Ok(name)
}

pub(crate) fn raw(value: &impl Serialize) -> Result<Box<RawValue>, DomainError> {
    serde_json::value::to_raw_value(value).map_err(DomainError::internal)
}

/// A provider as the API shows it: never its key.
#[derive(Debug, Clone, Serialize)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub base_url: String,
    pub has_key: bool,
    pub created_at: i64,
}

/// An assistant.
#[derive(Debug, Clone, Serialize)]
pub struct Assistant {
    pub id: String,
    pub name: String,
    pub instructions: String,
    pub model: String,
    pub providers: Vec<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i64>,
    pub steps: Option<serde_json::Value>,
    pub created_at: i64,
}

/// A conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: String,
    pub user_id: String,
    pub assistant_id: String,
    pub title: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The guided step the conversation is at (an index into the
    /// assistant's `steps`); `None` without steps or once they are done.
    pub step: Option<i64>,
    /// The answer saved for each step, by step key.
    pub answers: serde_json::Value,
}

/// Token counts of an answer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// True when the provider sent no usage (the stream was cut) and the
    /// counts are estimated from the text.
    pub estimated: bool,
}

/// A message of a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: String,
    pub conversation: String,
    pub seq: i64,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// `complete`, `streaming`, `incomplete` or `cancelled`.
    pub status: String,
    /// Frames of the answer included in `content`: apply deltas with a
    /// greater `seq`.
    pub delta_seq: i64,
    pub usage: Usage,
    pub provider: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    /// The guided step this message answers (the user's) or asks (the
    /// assistant's).
    pub step: Option<String>,
}

/// Why an assistant operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error(
        "no assistant is configured for this tenant: an admin adds a provider and an assistant first"
    )]
    NotConfigured,
    #[error(
        "no encryption key is configured (RELAIS_ASSISTANT_ENCRYPTION_KEY): provider keys cannot be stored"
    )]
    EncryptionKeyMissing,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("too many answers streaming at once ({0}); wait for one to finish")]
    TooManyStreams(&'static str),
    #[error("the tenant's daily token quota is used up")]
    QuotaExceeded,
    #[error("this answer is not streaming")]
    NotRunning,
    #[error("this page's origin may not use this widget")]
    OriginNotAllowed,
    #[error("the widget admitted all the visitors it may this hour; try again later")]
    TooManyVisitors,
    #[error("this visitor has sent all the messages the widget allows")]
    VisitorLimit,
    #[error("the conversation moved to another step meanwhile; reload it")]
    StepChanged,
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl AssistantError {
    pub fn code(&self) -> &'static str {
        match self {
            AssistantError::NotConfigured => "assistant_not_configured",
            AssistantError::EncryptionKeyMissing => "encryption_key_missing",
            AssistantError::NotFound(_) => "not_found",
            AssistantError::Invalid(_) => "invalid_request",
            AssistantError::Forbidden(_) => "forbidden",
            AssistantError::TooManyStreams(_) => "too_many_streams",
            AssistantError::QuotaExceeded => "token_quota_exceeded",
            AssistantError::NotRunning => "not_running",
            AssistantError::OriginNotAllowed => "forbidden",
            AssistantError::TooManyVisitors => "too_many_visitors",
            AssistantError::VisitorLimit => "visitor_message_limit",
            AssistantError::StepChanged => "step_changed",
            AssistantError::Store(_) => "internal",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            AssistantError::NotConfigured | AssistantError::EncryptionKeyMissing => {
                ErrorKind::Unavailable
            }
            AssistantError::NotFound(_) => ErrorKind::NotFound,
            AssistantError::Invalid(_) => ErrorKind::Invalid,
            AssistantError::Forbidden(_) | AssistantError::OriginNotAllowed => ErrorKind::Forbidden,
            AssistantError::TooManyStreams(_)
            | AssistantError::QuotaExceeded
            | AssistantError::TooManyVisitors
            | AssistantError::VisitorLimit => ErrorKind::RateLimited,
            AssistantError::NotRunning | AssistantError::StepChanged => ErrorKind::Conflict,
            AssistantError::Store(_) => ErrorKind::Internal,
        }
    }
}

impl From<AssistantError> for DomainError {
    fn from(e: AssistantError) -> Self {
        if let AssistantError::Store(cause) = &e {
            return DomainError::internal(cause);
        }
        DomainError::new(e.kind(), e.code(), e.to_string())
    }
}

impl From<AssistantError> for ApiError {
    fn from(e: AssistantError) -> Self {
        match e {
            AssistantError::Store(e) => e.into(),
            AssistantError::NotFound(what) => ApiError::NotFound(what),
            e => DomainError::from(e).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming(id: &str, content: &str, delta_seq: i64) -> Message {
        Message {
            id: id.into(),
            conversation: "c".into(),
            seq: 2,
            role: "assistant".into(),
            content: content.into(),
            status: "streaming".into(),
            delta_seq,
            usage: Usage::default(),
            provider: None,
            error: None,
            created_at: 0,
            step: None,
        }
    }

    fn delta(message: &str, seq: i64, text: &str) -> String {
        json!({"type": "pub", "channel": "assistant:c", "offset": seq + 10,
               "data": {"type": "assistant.delta", "message": message, "seq": seq, "text": text}})
        .to_string()
    }

    #[test]
    fn the_snapshot_completes_saved_text_with_the_frames_that_follow_it() {
        let mut messages = vec![streaming("a", "Hello", 2), streaming("b", "", 0)];
        let frames = [
            delta("a", 1, "Hel"),
            delta("a", 2, "lo"),
            json!({"type": "pub", "data": {"type": "assistant.message", "message": {}}})
                .to_string(),
            delta("a", 3, ", wor"),
            delta("b", 2, "skipped: frame 1 is missing"),
            delta("a", 4, "ld \"quoted\""),
            delta("a", 6, "after a gap: not applied"),
        ];
        catch_up(&mut messages, frames.iter().map(String::as_str));
        assert_eq!(messages[0].content, "Hello, world \"quoted\"");
        assert_eq!(messages[0].delta_seq, 4);
        assert_eq!(messages[1].content, "");
        assert_eq!(messages[1].delta_seq, 0);
    }

    #[test]
    fn each_assistant_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                AssistantError::NotConfigured,
                503,
                "assistant_not_configured",
                "no assistant is configured for this tenant: an admin adds a provider and an assistant first",
            ),
            (
                AssistantError::EncryptionKeyMissing,
                503,
                "encryption_key_missing",
                "no encryption key is configured (RELAIS_ASSISTANT_ENCRYPTION_KEY): provider keys cannot be stored",
            ),
            (
                AssistantError::NotFound("conversation"),
                404,
                "not_found",
                "conversation not found",
            ),
            (
                AssistantError::Invalid("text: 1-16000 characters".into()),
                422,
                "invalid_request",
                "text: 1-16000 characters",
            ),
            (
                AssistantError::TooManyStreams("per user"),
                429,
                "too_many_streams",
                "too many answers streaming at once (per user); wait for one to finish",
            ),
            (
                AssistantError::QuotaExceeded,
                429,
                "token_quota_exceeded",
                "the tenant's daily token quota is used up",
            ),
            (
                AssistantError::NotRunning,
                409,
                "not_running",
                "this answer is not streaming",
            ),
            (
                AssistantError::OriginNotAllowed,
                403,
                "forbidden",
                "this page's origin may not use this widget",
            ),
            (
                AssistantError::TooManyVisitors,
                429,
                "too_many_visitors",
                "the widget admitted all the visitors it may this hour; try again later",
            ),
            (
                AssistantError::VisitorLimit,
                429,
                "visitor_message_limit",
                "this visitor has sent all the messages the widget allows",
            ),
            (
                AssistantError::StepChanged,
                409,
                "step_changed",
                "the conversation moved to another step meanwhile; reload it",
            ),
            (
                AssistantError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }
}
