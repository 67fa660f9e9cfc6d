//! Runs: one assistant answer, streamed from the first provider of the
//! chain that answers, coalesced into frames, stored then published.
//!
//! Frames on `assistant:<conversation>`:
//! - `{"type":"assistant.message","message":{…}}`: the user's message;
//! - `{"type":"assistant.started","message":{…}}`: the empty answer, with
//!   its id (the run id) and `status: "streaming"`;
//! - `{"type":"assistant.delta","message":id,"seq":n,"text":"…"}`: the
//!   text added by frame `n` (1, 2, …);
//! - `{"type":"assistant.fallback","message":id,"from":…,"to":…,"reason":…}`;
//! - `{"type":"assistant.done","message":id,"status":…,"content":…,
//!   "usage":{…},"incomplete":bool,"error"?}`: the stored final answer.
//!
//! **Resume.** The row holds the text so far and the number of the last
//! frame it includes (`delta_seq`), saved every half second; the
//! snapshot completes it with the later frames from the channel's history.
//! A subscriber's snapshot is read after its position on the channel, so
//! every frame not in the snapshot arrives live; a frame both in the
//! snapshot and live has `seq <= delta_seq` and is skipped. Applying only deltas with `seq` one above what a device has
//! therefore rebuilds the exact text.

use std::sync::Arc;

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionStreamOptions, CreateChatCompletionRequest, CreateChatCompletionStreamResponse,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Assistant, AssistantError, CONTEXT_MESSAGES, Conversation, Engine, MAX_TEXT, Message, Usage,
    store,
};
use crate::{
    auth::Principal,
    ids::{TenantId, now_millis},
    notify::{fanout::Recipients, recipients::RecipientSpec, trigger::TriggerRequest},
};

/// Why a provider failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 429: too many requests for now.
    RateLimited,
    /// 429 `insufficient_quota`: the key's credit is used up.
    QuotaExceeded,
    /// 5xx.
    Server(u16),
    /// The connection failed or broke.
    Connection(String),
    /// No first token within the timeout.
    Timeout,
    /// Any other refusal (400, 401, 404…): the next provider would not help
    /// the request, but may have a valid key, so the chain goes on too.
    Refused(u16, String),
    /// The provider sent something that is not a completion stream.
    Protocol(String),
}

impl Failure {
    /// A request that got no answer, or whose answer broke off.
    pub fn transport(e: reqwest::Error) -> Failure {
        if e.is_timeout() {
            Failure::Timeout
        } else {
            Failure::Connection(without_url(&e))
        }
    }

    /// A provider's refusal: its status and the body of the error, in the
    /// OpenAI shape `{"error": {"message", "type", "code"}}` when it is one.
    pub fn refusal(status: u16, body: &[u8]) -> Failure {
        #[derive(serde::Deserialize, Default)]
        struct Wrapped {
            #[serde(default)]
            error: Detail,
        }
        #[derive(serde::Deserialize, Default)]
        struct Detail {
            #[serde(default)]
            message: Option<String>,
            #[serde(default, rename = "type")]
            kind: Option<String>,
            #[serde(default)]
            code: Option<serde_json::Value>,
        }
        let detail = serde_json::from_slice::<Wrapped>(body)
            .map(|w| w.error)
            .unwrap_or_default();
        let is_quota = |v: Option<&str>| v == Some("insufficient_quota");
        let code = detail.code.as_ref().and_then(|c| c.as_str());
        if status == 429 {
            if is_quota(code) || is_quota(detail.kind.as_deref()) {
                Failure::QuotaExceeded
            } else {
                Failure::RateLimited
            }
        } else if status >= 500 {
            Failure::Server(status)
        } else {
            let message = detail.message.unwrap_or_else(|| {
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
            });
            Failure::Refused(status, message)
        }
    }

    /// A short reason for people and analytics.
    pub fn reason(&self) -> String {
        match self {
            Failure::RateLimited => "rate_limited".into(),
            Failure::QuotaExceeded => "insufficient_quota".into(),
            Failure::Server(s) => format!("server_error ({s})"),
            Failure::Connection(e) => format!("connection_error ({e})"),
            Failure::Timeout => "first_token_timeout".into(),
            Failure::Refused(s, m) => format!("refused ({s}: {m})"),
            Failure::Protocol(e) => format!("protocol_error ({e})"),
        }
    }

    /// Whether the next provider of the chain is tried.
    pub fn falls_back(&self) -> bool {
        !matches!(self, Failure::Refused(400, _))
    }
}

/// What an anonymous visitor is told when an answer fails: the stored
/// error (for the tenant) may name the provider and its address.
pub const VISITOR_ERROR: &str = "the assistant could not answer; try again later";

/// Replaces the stored errors of `messages` with [`VISITOR_ERROR`], before
/// they are shown to an anonymous visitor.
pub fn hide_errors(messages: &mut [Message]) {
    for m in messages.iter_mut().filter(|m| m.error.is_some()) {
        m.error = Some(VISITOR_ERROR.into());
    }
}

/// What `send` answers: the stored question and the answer being streamed.
#[derive(serde::Serialize)]
pub struct Started {
    pub message: Message,
    pub reply: Message,
    /// The run to cancel: the answer's id.
    pub run: String,
}

/// A streaming answer whose progress was last saved this long ago lost its
/// node (a live one saves every frame): it counts no more against the
/// limits, and the background job closes it as interrupted.
const STALE_RUN_MS: i64 = 15 * 60 * 1000;

impl Engine {
    /// The conversation, if it is the caller's.
    pub async fn own_conversation(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Conversation, AssistantError> {
        store::conversation(&self.store, who.tenant.as_str(), id)
            .await?
            .filter(|c| c.user_id == who.user.as_str())
            .ok_or(AssistantError::NotFound("conversation"))
    }

    /// Stores the user's message and starts the answer. `step`, when
    /// given, is the guided step the client believes the message answers:
    /// if the conversation has moved on, the message is refused.
    pub async fn send(
        self: &Arc<Self>,
        who: &Principal,
        conversation: &str,
        text: &str,
        step: Option<&str>,
    ) -> Result<Started, AssistantError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_TEXT {
            return Err(AssistantError::Invalid(format!(
                "text: 1-{MAX_TEXT} characters"
            )));
        }
        let tenant = who.tenant.as_str();
        let conversation = self.own_conversation(who, conversation).await?;
        let assistant = store::assistant(&self.store, tenant, &conversation.assistant_id)
            .await?
            .ok_or(AssistantError::NotConfigured)?;
        if assistant.providers.is_empty() {
            return Err(AssistantError::NotConfigured);
        }
        if self.config.tokens_per_day > 0
            && store::tokens_today(&self.store, tenant).await? >= self.config.tokens_per_day
        {
            self.metrics.assistant_refused.inc();
            return Err(AssistantError::QuotaExceeded);
        }
        let limits = store::StreamLimits {
            per_user: self.config.max_streams_per_user,
            per_tenant: self.config.max_streams_per_tenant,
            stale_after: STALE_RUN_MS,
        };
        let steps = super::steps::of(&assistant);
        if let Some(expected) = step {
            let current = conversation
                .step
                .and_then(|i| steps.get(usize::try_from(i).ok()?));
            if current.is_none_or(|s| s.key != expected) {
                return Err(AssistantError::StepChanged);
            }
        }
        let (step, guide) = match super::steps::answer(&steps, &conversation, text) {
            Some((step, guide)) => (Some(step), Some(guide)),
            None => (None, None),
        };
        let started = store::start_exchange(
            &self.store,
            tenant,
            &conversation,
            text,
            &limits,
            step.as_ref(),
        )
        .await?;
        let (question, answer) = match started {
            Ok(exchange) => exchange,
            Err(store::Refused::Streams(which)) => {
                self.metrics.assistant_refused.inc();
                return Err(AssistantError::TooManyStreams(which));
            }
            Err(store::Refused::StepChanged) => return Err(AssistantError::StepChanged),
        };
        let token = CancellationToken::new();
        self.runs.0.insert(answer.id.clone(), token.clone());
        self.publish(
            &who.tenant,
            &conversation.id,
            json!({"type": "assistant.message", "message": question}),
        )
        .await;
        self.publish(
            &who.tenant,
            &conversation.id,
            json!({"type": "assistant.started", "message": answer}),
        )
        .await;
        let job = Job {
            tenant: who.tenant.clone(),
            conversation: conversation.id.clone(),
            assistant,
            answer: answer.clone(),
            cancel: token,
            guide,
            visitor: who.is_visitor(),
        };
        tokio::spawn(self.clone().run(job));
        Ok(Started {
            run: answer.id.clone(),
            message: question,
            reply: answer,
        })
    }

    /// Opens the guided steps of a new conversation, if its assistant has
    /// any: the conversation is at the first step, which the assistant asks.
    pub async fn open_steps(
        &self,
        tenant: &TenantId,
        mut conversation: Conversation,
        assistant: &Assistant,
    ) -> Result<Conversation, AssistantError> {
        if let Some(first) = super::steps::of(assistant).first() {
            store::open_steps(
                &self.store,
                tenant.as_str(),
                &conversation,
                &first.key,
                &first.prompt,
            )
            .await?;
            conversation.step = Some(0);
        }
        Ok(conversation)
    }

    /// Cancels the caller's answer on whichever node streams it.
    pub async fn cancel(&self, who: &Principal, run: &str) -> Result<(), AssistantError> {
        let message = store::message(&self.store, who.tenant.as_str(), run)
            .await?
            .ok_or(AssistantError::NotFound("run"))?;
        self.own_conversation(who, &message.conversation).await?;
        if message.status != "streaming" {
            return Err(AssistantError::NotRunning);
        }
        self.runs.cancel(run);
        if let Some(gateway) = self.gateway.upgrade() {
            let cancel = super::CancelRun {
                run: run.to_owned(),
            };
            if let Err(e) = gateway
                .broker
                .control(crate::bus::ControlMessage::of(&cancel))
                .await
            {
                tracing::warn!(error = %e, run, "cancel not sent to the other nodes");
            }
        }
        Ok(())
    }

    /// Publishes an event on the conversation's channel; the event is
    /// stored already, so a failed publication is only logged.
    async fn publish(&self, tenant: &TenantId, conversation: &str, event: Value) {
        let Some(gateway) = self.gateway.upgrade() else {
            return;
        };
        let raw = match serde_json::value::to_raw_value(&event) {
            Ok(raw) => raw,
            Err(e) => return tracing::error!(error = %e, "assistant event not encoded"),
        };
        let published =
            match gateway.resolve(tenant, &format!("{}:{conversation}", super::NAMESPACE)) {
                Ok((channel, ns)) => gateway.publish(&channel, ns, &raw).await.map(|_| ()),
                Err(e) => Err(e),
            };
        if let Err(e) = published {
            tracing::warn!(error = %e, conversation, "assistant event not published");
        }
    }

    async fn run(self: Arc<Self>, job: Job) {
        let id = job.answer.id.clone();
        self.metrics.assistant_streams.inc();
        self.stream_answer(&job).await;
        self.metrics.assistant_streams.dec();
        self.runs.0.remove(&id);
    }

    async fn stream_answer(&self, job: &Job) {
        let tenant = job.tenant.as_str();
        let request = match self.request(job).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "assistant context not read");
                let progress = Progress::default();
                return self
                    .end(
                        job,
                        progress,
                        "incomplete",
                        None,
                        0,
                        Some("internal error".into()),
                        &request_chars(&[]),
                    )
                    .await;
            }
        };
        let prompt_chars = request_chars(&request.messages);
        let mut fallbacks = 0i64;
        let mut last_failure: Option<Failure> = None;
        let mut previous: Option<String> = None;
        for provider_id in &job.assistant.providers {
            let provider = match store::provider_secret(&self.store, tenant, provider_id).await {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "provider not read");
                    continue;
                }
            };
            if let Some(from) = previous.take() {
                let reason = last_failure
                    .as_ref()
                    .map(Failure::reason)
                    .unwrap_or_default();
                fallbacks += 1;
                self.fallback(job, &from, &provider.name, &reason).await;
                self.publish(
                    &job.tenant,
                    &job.conversation,
                    json!({"type": "assistant.fallback", "message": job.answer.id,
                           "from": from, "to": provider.name, "reason": reason}),
                )
                .await;
            }
            let key = match &provider.api_key_enc {
                None => String::new(),
                Some(sealed) => match &self.cipher {
                    Some(c) => match c.open(sealed, &format!("{tenant}/{}", provider.id)) {
                        Ok(k) => k,
                        Err(e) => {
                            tracing::warn!(error = %e, provider = %provider.id, "provider key not decrypted");
                            continue;
                        }
                    },
                    None => continue,
                },
            };
            // No retries: a provider that refuses or fails hands over to the
            // next one at once.
            match self
                .first_token(&provider.base_url, &key, &request, &job.cancel)
                .await
            {
                Ok(Start::Cancelled) => {
                    return self
                        .end(
                            job,
                            Progress::default(),
                            "cancelled",
                            Some(&provider.id),
                            fallbacks,
                            None,
                            &prompt_chars,
                        )
                        .await;
                }
                Ok(Start::Streaming(stream, prelude)) => {
                    return self
                        .stream_from(job, &provider.id, fallbacks, stream, prelude, &prompt_chars)
                        .await;
                }
                Err(failure) => {
                    self.metrics.assistant_provider_failures.inc();
                    tracing::warn!(provider = %provider.name, reason = %failure.reason(), "assistant provider failed before the first token");
                    let next = failure.falls_back();
                    if failure == Failure::QuotaExceeded {
                        self.notify_quota(job, &provider.name).await;
                    }
                    last_failure = Some(failure);
                    if !next {
                        break;
                    }
                    previous = Some(provider.name.clone());
                }
            }
        }
        let error = match last_failure {
            Some(f) => format!("every provider failed; last: {}", f.reason()),
            None => "no usable provider in the assistant's chain".into(),
        };
        self.end(
            job,
            Progress::default(),
            "incomplete",
            None,
            fallbacks,
            Some(error),
            &prompt_chars,
        )
        .await;
    }

    /// Tells the tenant's admins that `provider` failed and `next` takes
    /// over; at most once per assistant, provider and interval (on this node
    /// by the clock, across nodes by the trigger's idempotency key).
    async fn fallback(&self, job: &Job, provider: &str, next: &str, reason: &str) {
        self.metrics.assistant_fallbacks.inc();
        let interval = self.config.fallback_notify_interval;
        let key = format!("{}/{}/{provider}", job.tenant, job.assistant.id);
        {
            let now = std::time::Instant::now();
            let mut last = self
                .notified
                .entry(key.clone())
                .or_insert(now - interval * 2);
            if now.duration_since(*last) < interval {
                return;
            }
            *last = now;
        }
        let window = now_millis() / (interval.as_millis().max(1) as i64);
        let trigger = TriggerRequest {
            type_key: "assistant.fallback".into(),
            payload: json!({
                "assistant": {"id": job.assistant.id, "name": job.assistant.name},
                "provider": {"name": provider},
                "fallback": {"name": next},
                "reason": reason,
            }),
            recipients: RecipientSpec {
                roles: vec!["admin".into()],
                ..RecipientSpec::default()
            },
            actor: None,
        };
        let idempotency = format!("assistant.fallback:{key}:{window}");
        if let Err(e) = self
            .notify
            .trigger(
                &job.tenant,
                trigger,
                Some(&idempotency),
                Recipients::MayBeNone,
            )
            .await
        {
            tracing::warn!(error = %e, "admins not notified of an assistant fallback");
        }
    }

    async fn notify_quota(&self, job: &Job, provider: &str) {
        let window = now_millis() / store::DAY_MS;
        let trigger = TriggerRequest {
            type_key: "assistant.quota_exceeded".into(),
            payload: json!({
                "assistant": {"id": job.assistant.id, "name": job.assistant.name},
                "provider": {"name": provider},
            }),
            recipients: RecipientSpec {
                roles: vec!["admin".into()],
                ..RecipientSpec::default()
            },
            actor: None,
        };
        let key = format!("assistant.quota:{}:{provider}:{window}", job.assistant.id);
        if let Err(e) = self
            .notify
            .trigger(&job.tenant, trigger, Some(&key), Recipients::MayBeNone)
            .await
        {
            tracing::warn!(error = %e, "admins not notified of a provider quota");
        }
    }

    /// Opens the stream and waits for its first token (or its end), within
    /// the first-token timeout.
    async fn first_token(
        &self,
        base_url: &str,
        key: &str,
        request: &CreateChatCompletionRequest,
        cancel: &CancellationToken,
    ) -> Result<Start, Failure> {
        let http = self.http();
        let attempt = async {
            let mut stream = super::upstream::open(&http, base_url, key, request).await?;
            let mut prelude = Vec::new();
            loop {
                match stream.next().await {
                    None => return Ok(Start::Streaming(stream, prelude)),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(chunk)) => {
                        let has_token = chunk.usage.is_some()
                            || chunk.choices.iter().any(|c| {
                                c.delta.content.as_deref().is_some_and(|t| !t.is_empty())
                                    || c.finish_reason.is_some()
                            });
                        prelude.push(chunk);
                        if has_token {
                            return Ok(Start::Streaming(stream, prelude));
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => Ok(Start::Cancelled),
            outcome = tokio::time::timeout(self.config.first_token_timeout, attempt) => {
                outcome.unwrap_or(Err(Failure::Timeout))
            }
        }
    }

    /// Streams the rest of an answer that has started, coalescing tokens
    /// into frames at most every `frame_interval`.
    async fn stream_from(
        &self,
        job: &Job,
        provider: &str,
        fallbacks: i64,
        mut stream: super::upstream::Chunks,
        prelude: Vec<CreateChatCompletionStreamResponse>,
        prompt_chars: &str,
    ) {
        let mut progress = Progress::default();
        for chunk in prelude {
            progress.take(chunk);
        }
        let interval = self.config.frame_interval;
        // The first token goes out at once; later ones wait for the frame.
        let mut next_frame = Instant::now();
        let (status, error) = loop {
            if !progress.pending.is_empty() && Instant::now() >= next_frame {
                self.frame(job, &mut progress).await;
                next_frame = Instant::now() + interval;
            }
            let wait = async {
                if progress.pending.is_empty() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep_until(next_frame).await
                }
            };
            tokio::select! {
                biased;
                _ = job.cancel.cancelled() => break ("cancelled", None),
                _ = wait => {}
                item = stream.next() => match item {
                    None => break ("complete", None),
                    Some(Ok(chunk)) => progress.take(chunk),
                    Some(Err(failure)) => {
                        break ("incomplete", Some(format!("the provider failed mid-answer: {}", failure.reason())));
                    }
                },
            }
        };
        // Dropping the stream here closes the upstream request.
        drop(stream);
        if status == "complete" && progress.usage.is_none() && !progress.finished {
            // The provider closed without a finish reason or usage: cut.
            self.end(
                job,
                progress,
                "incomplete",
                Some(provider),
                fallbacks,
                Some("the provider closed the stream before the end of the answer".into()),
                prompt_chars,
            )
            .await;
            return;
        }
        self.end(
            job,
            progress,
            status,
            Some(provider),
            fallbacks,
            error,
            prompt_chars,
        )
        .await;
    }

    /// Publishes the text a frame adds, then hands the text so far to the
    /// batched saver ([`super::saver`]) at most every [`SAVE_EVERY`].
    ///
    /// Saving is off the relay path: a write per frame (hundreds of
    /// streams, dozens of frames a second each) would put the store's
    /// latency on every token. A device that joins between two saves still
    /// gets the exact text: the snapshot completes the saved text with the
    /// frames the channel's history holds (see [`super::Snapshot`]).
    async fn frame(&self, job: &Job, progress: &mut Progress) {
        let text = std::mem::take(&mut progress.pending);
        progress.content.push_str(&text);
        progress.seq += 1;
        self.metrics.assistant_frames.inc();
        self.publish(
            &job.tenant,
            &job.conversation,
            json!({"type": "assistant.delta", "message": job.answer.id, "seq": progress.seq, "text": text}),
        )
        .await;
        if progress
            .saved_at
            .is_none_or(|at| at.elapsed() >= SAVE_EVERY)
        {
            progress.saved_at = Some(Instant::now());
            self.saver
                .offer(&job.answer.id, progress.content.clone(), progress.seq);
        }
    }

    /// Stores the final answer once and tells every device.
    #[allow(clippy::too_many_arguments)]
    async fn end(
        &self,
        job: &Job,
        mut progress: Progress,
        status: &str,
        provider: Option<&str>,
        fallbacks: i64,
        error: Option<String>,
        prompt_chars: &str,
    ) {
        if !progress.pending.is_empty() {
            // The last tokens: one more frame, so live devices get them as
            // deltas like the others.
            self.frame(job, &mut progress).await;
        }
        let usage = match progress.usage {
            Some(u) => u,
            None => Usage {
                prompt_tokens: estimate_tokens(prompt_chars),
                completion_tokens: estimate_tokens(&progress.content),
                estimated: true,
            },
        };
        let outcome = store::Outcome {
            content: &progress.content,
            delta_seq: progress.seq,
            status,
            usage,
            provider,
            fallbacks,
            error: error.as_deref(),
        };
        match store::finish(&self.store, &job.answer.id, &outcome).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::error!(error = %e, "final assistant answer not stored"),
        }
        self.metrics.assistant_messages.inc();
        self.metrics
            .assistant_tokens
            .inc_by((usage.prompt_tokens + usage.completion_tokens).max(0) as u64);
        if status == "incomplete" {
            self.metrics.assistant_failures.inc();
        }
        let mut done = json!({
            "type": "assistant.done",
            "message": job.answer.id,
            "status": status,
            "content": progress.content,
            "seq": progress.seq,
            "usage": usage,
            "provider": provider,
            "incomplete": status != "complete",
        });
        if let Some(error) = error {
            done["error"] = if job.visitor {
                json!(VISITOR_ERROR)
            } else {
                json!(error)
            };
        }
        self.publish(&job.tenant, &job.conversation, done).await;
    }

    /// The completion request: instructions, the conversation so far.
    async fn request(&self, job: &Job) -> Result<CreateChatCompletionRequest, sqlx::Error> {
        let history = store::context(
            &self.store,
            job.tenant.as_str(),
            &job.conversation,
            job.answer.seq,
            CONTEXT_MESSAGES,
        )
        .await?;
        let mut messages: Vec<ChatCompletionRequestMessage> = Vec::new();
        if !job.assistant.instructions.is_empty() {
            messages.push(
                ChatCompletionRequestSystemMessage::from(job.assistant.instructions.as_str())
                    .into(),
            );
        }
        if let Some(guide) = &job.guide {
            messages.push(ChatCompletionRequestSystemMessage::from(guide.as_str()).into());
        }
        for (role, content) in history {
            messages.push(if role == "assistant" {
                ChatCompletionRequestAssistantMessage::from(content).into()
            } else {
                ChatCompletionRequestUserMessage::from(content).into()
            });
        }
        Ok(CreateChatCompletionRequest {
            model: job.assistant.model.clone(),
            messages,
            temperature: job.assistant.temperature.map(|t| t as f32),
            max_completion_tokens: job.assistant.max_tokens.map(|t| t as u32),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

enum Start {
    Cancelled,
    Streaming(
        super::upstream::Chunks,
        Vec<CreateChatCompletionStreamResponse>,
    ),
}

/// A transport error's text without the request's URL (it may carry a
/// key in a query string).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<provider>");
    }
    text
}

struct Job {
    tenant: TenantId,
    conversation: String,
    assistant: Assistant,
    answer: Message,
    cancel: CancellationToken,
    /// What the model is told about the guided steps, if any.
    guide: Option<String>,
    /// The conversation is an anonymous visitor's: provider errors are
    /// not shown to it (they may name the provider's address).
    visitor: bool,
}

/// How often a streaming answer's text so far goes to the saver: with the
/// saver's own interval, what a node that stops mid-answer loses, and how
/// far the saved text may lag the channel.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// An answer as it streams.
#[derive(Default)]
struct Progress {
    /// Text stored and published.
    content: String,
    /// Text received, not yet in a frame.
    pending: String,
    /// Frames published.
    seq: i64,
    usage: Option<Usage>,
    finished: bool,
    /// When the text so far was last handed to the saver.
    saved_at: Option<Instant>,
}

impl Progress {
    fn take(&mut self, chunk: CreateChatCompletionStreamResponse) {
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content {
                self.pending.push_str(&text);
            }
            if choice.finish_reason.is_some() {
                self.finished = true;
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: i64::from(u.prompt_tokens),
                completion_tokens: i64::from(u.completion_tokens),
                estimated: false,
            });
        }
    }
}

/// The text of a request, for estimating its tokens when the provider
/// sends no usage.
fn request_chars(messages: &[ChatCompletionRequestMessage]) -> String {
    serde_json::to_string(messages).unwrap_or_default()
}

/// About four characters per token: the usual rule of thumb for English
/// text; marked as an estimate wherever it is shown.
pub fn estimate_tokens(text: &str) -> i64 {
    text.chars().count().div_ceil(4) as i64
}

/// Deletes expired conversations every `purge_interval` until `stop`, and
/// closes answers whose node stopped mid-answer. On `stop`, cancels the
/// answers this node streams.
pub async fn purge_loop(engine: Arc<Engine>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // The server stops: answers streaming here end as cancelled
                // (with their text so far) rather than being cut unseen.
                for run in engine.runs.0.iter() {
                    run.value().cancel();
                }
                return;
            }
            _ = tokio::time::sleep(engine.config.purge_interval) => {}
        }
        match store::close_stale(&engine.store, STALE_RUN_MS).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(answers = n, "interrupted assistant answers closed"),
            Err(e) => tracing::warn!(error = %e, "interrupted assistant answers not closed"),
        }
        match engine.auth.purge_visitors().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "expired widget visitor sessions purged"),
            Err(e) => tracing::warn!(error = %e, "widget visitor sessions not purged"),
        }
        match store::purge(&engine.store, engine.config.retention_days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(conversations = n, "expired assistant conversations purged"),
            Err(e) => tracing::warn!(error = %e, "assistant retention purge failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, kind: Option<&str>, code: Option<&str>) -> Failure {
        let body = serde_json::json!({"error": {"message": "m", "type": kind, "param": null, "code": code}});
        Failure::refusal(status, body.to_string().as_bytes())
    }

    #[test]
    fn provider_errors_are_classified_and_only_a_bad_request_ends_the_chain() {
        assert_eq!(
            refusal(429, Some("insufficient_quota"), Some("insufficient_quota")),
            Failure::QuotaExceeded
        );
        assert_eq!(
            refusal(429, None, Some("insufficient_quota")),
            Failure::QuotaExceeded
        );
        assert_eq!(
            refusal(429, Some("requests"), Some("rate_limit_exceeded")),
            Failure::RateLimited
        );
        assert_eq!(Failure::refusal(429, b"slow down"), Failure::RateLimited);
        assert_eq!(
            Failure::refusal(503, b"<html>busy</html>"),
            Failure::Server(503)
        );
        let unauthorized = refusal(401, Some("invalid_request_error"), None);
        assert_eq!(unauthorized, Failure::Refused(401, "m".into()));
        assert!(unauthorized.falls_back());
        assert_eq!(
            Failure::refusal(404, b"no such model"),
            Failure::Refused(404, "no such model".into())
        );
        let bad = refusal(400, None, None);
        assert!(!bad.falls_back());
        for f in [
            Failure::RateLimited,
            Failure::QuotaExceeded,
            Failure::Server(500),
            Failure::Timeout,
        ] {
            assert!(f.falls_back(), "{f:?}");
        }
    }

    #[test]
    fn estimates_round_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcde"), 2);
    }
}
