//! The assistant against a real local OpenAI-compatible server
//! ([`crate::fake_openai`]): streaming to every device, the final answer
//! stored once with usage, fallback with the admins told, a cut stream,
//! cancel across two nodes, resume, limits, retention, encryption at rest
//! and tenant isolation.

use serde_json::{Value, json};

use crate::{fake_openai::FakeOpenAi, helpers::*};

/// A test encryption key (32 bytes, base64).
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

async fn app_with(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("RELAIS_ASSISTANT_ENCRYPTION_KEY", KEY),
        ("RELAIS_ASSISTANT_FIRST_TOKEN_TIMEOUT_MS", "700"),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

/// Adds one provider per mode (in order) and an assistant using them as
/// its chain; returns the assistant's id and the providers' ids.
async fn configure(app: &TestApp, fake: &FakeOpenAi, modes: &[&str]) -> (String, Vec<String>) {
    let admin = app.admin_token().await;
    let mut providers = Vec::new();
    for mode in modes {
        let res = app
            .post(
                "/api/v1/assistant/providers",
                Some(&admin),
                json!({"name": format!("{mode}-provider"), "base_url": fake.base_url(mode),
                       "api_key": format!("sk-test-{mode}-0123456789")}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let p: Value = res.json().await.unwrap();
        providers.push(p["id"].as_str().unwrap().to_owned());
    }
    let res = app
        .post(
            "/api/v1/assistant/assistants",
            Some(&admin),
            json!({"name": "Helper", "instructions": "Be brief.", "model": "test-model",
                   "providers": providers, "temperature": 0.3, "max_tokens": 256}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let a: Value = res.json().await.unwrap();
    (a["id"].as_str().unwrap().to_owned(), providers)
}

async fn conversation(app: &TestApp, token: &str) -> String {
    let res = app
        .post("/api/v1/assistant/conversations", Some(token), json!({}))
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["conversation"]["id"].as_str().unwrap().to_owned()
}

/// Posts a user message to a conversation.
async fn post_message(
    app: &TestApp,
    token: &str,
    conversation: &str,
    text: &str,
) -> reqwest::Response {
    app.post(
        &format!("/api/v1/assistant/conversations/{conversation}/messages"),
        Some(token),
        json!({"text": text}),
    )
    .await
}

/// Posts a user message and expects its answer to start (202).
async fn send(app: &TestApp, token: &str, conversation: &str, text: &str) -> Value {
    let res = post_message(app, token, conversation, text).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
}

/// Reads a device's publications until the answer `message` is done;
/// returns the text rebuilt from the deltas (those above `have`) and the
/// `assistant.done` event.
async fn follow(ws: &mut Ws, message: &str, mut text: String, mut have: i64) -> (String, Value) {
    loop {
        let frame = ws.recv().await;
        if frame["type"] != "pub" {
            continue;
        }
        let data = &frame["data"];
        if data["message"] != message {
            continue;
        }
        match data["type"].as_str().unwrap() {
            "assistant.delta" => {
                let seq = data["seq"].as_i64().unwrap();
                if seq <= have {
                    continue;
                }
                assert_eq!(seq, have + 1, "no gap between frames: {data}");
                have = seq;
                text.push_str(data["text"].as_str().unwrap());
            }
            "assistant.done" => return (text, data.clone()),
            _ => {}
        }
    }
}

async fn messages(app: &TestApp, token: &str, conversation: &str) -> Vec<Value> {
    let res = app
        .get(
            &format!("/api/v1/assistant/conversations/{conversation}/messages"),
            Some(token),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["messages"].as_array().unwrap().clone()
}

async fn inbox_types(app: &TestApp, token: &str) -> Vec<String> {
    let res = app.get("/api/v1/inbox", Some(token)).await;
    let body: Value = res.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_providers_the_assistant_answers_not_configured() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let res = app
        .post("/api/v1/assistant/conversations", Some(&token), json!({}))
        .await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "assistant_not_configured", "{body}");
    // Without an encryption key, no key can be stored.
    let admin = app.admin_token().await;
    let res = app
        .post(
            "/api/v1/assistant/providers",
            Some(&admin),
            json!({"name": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-x"}),
        )
        .await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "encryption_key_missing", "{body}");
    // Members do not manage providers.
    let res = app
        .post(
            "/api/v1/assistant/providers",
            Some(&token),
            json!({"name": "x", "base_url": "http://localhost:1/v1"}),
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn an_answer_streams_to_every_device_and_is_stored_once_with_usage() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    configure(&app, &fake, &["ok"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    let channel = format!("assistant:{conv}");
    let mut phone = app.ws_connected(&token).await;
    let mut laptop = app.ws_connected(&token).await;
    phone.subscribe(&channel).await;
    laptop.subscribe(&channel).await;

    let started = send(&app, &token, &conv, "Say hello").await;
    let answer = started["reply"]["id"].as_str().unwrap().to_owned();
    assert_eq!(started["run"], answer.as_str());
    for ws in [&mut phone, &mut laptop] {
        let (text, done) = follow(ws, &answer, String::new(), 0).await;
        assert_eq!(text, "Hello world!");
        assert_eq!(done["content"], "Hello world!");
        assert_eq!(done["incomplete"], false);
        assert_eq!(
            done["usage"],
            json!({"prompt_tokens": 11, "completion_tokens": 4, "estimated": false})
        );
    }
    // The provider got the instructions, the question and the usage option.
    let request = &fake.requests("ok")[0];
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    assert_eq!(request["messages"][0]["content"], "Be brief.");
    assert_eq!(request["messages"][1]["content"], "Say hello");

    let stored = messages(&app, &token, &conv).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0]["role"], "user");
    assert_eq!(stored[1]["role"], "assistant");
    assert_eq!(stored[1]["status"], "complete");
    assert_eq!(stored[1]["content"], "Hello world!");
    assert_eq!(stored[1]["usage"]["completion_tokens"], 4);

    // Export in both formats.
    let json_export: Value = app
        .get(
            &format!("/api/v1/assistant/conversations/{conv}/export"),
            Some(&token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json_export["messages"].as_array().unwrap().len(), 2);
    let csv = app
        .get(
            &format!("/api/v1/assistant/conversations/{conv}/export?format=csv"),
            Some(&token),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("seq,role,status"), "{csv}");
    assert!(csv.contains("Hello world!"), "{csv}");

    // Analytics and counters.
    let admin = app.admin_token().await;
    let stats: Value = app
        .get("/api/v1/assistant/analytics", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["days"][0]["messages"], 1, "{stats}");
    assert_eq!(stats["days"][0]["completion_tokens"], 4, "{stats}");
    assert_eq!(app.metric("relais_assistant_messages_total").await, 1.0);
}

#[tokio::test]
async fn failing_providers_hand_over_down_the_chain_and_admins_are_told() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    let (_, providers) = configure(
        &app,
        &fake,
        &["rate_limit", "quota", "error500", "stall", "ok"],
    )
    .await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe(&format!("assistant:{conv}")).await;
    let started = send(&app, &token, &conv, "Anyone there?").await;
    let answer = started["reply"]["id"].as_str().unwrap().to_owned();

    let mut reasons = Vec::new();
    let done = loop {
        let frame = ws.recv().await;
        match frame["data"]["type"].as_str() {
            Some("assistant.fallback") => {
                reasons.push(frame["data"]["reason"].as_str().unwrap().to_owned())
            }
            Some("assistant.done") => break frame["data"].clone(),
            _ => {}
        }
    };
    assert_eq!(
        reasons,
        [
            "rate_limited",
            "insufficient_quota",
            "server_error (500)",
            "first_token_timeout"
        ]
    );
    assert_eq!(done["message"], answer.as_str());
    assert_eq!(done["incomplete"], false);
    assert_eq!(done["content"], "Hello world!");
    assert_eq!(done["provider"], providers[4].as_str());
    for mode in ["rate_limit", "quota", "error500", "stall", "ok"] {
        assert_eq!(fake.requests(mode).len(), 1, "{mode}");
    }

    let admin = app.admin_token().await;
    eventually("the admin is told of the fallback", || async {
        let types = inbox_types(&app, &admin).await;
        types.iter().filter(|t| *t == "assistant.fallback").count() == 4
            && types.iter().any(|t| t == "assistant.quota_exceeded")
    })
    .await;
    // The member who asked is not an admin: nothing for them.
    assert!(inbox_types(&app, &token).await.is_empty());

    // A second answer through the same failing providers: the admins were
    // told already within the interval.
    let started = send(&app, &token, &conv, "Again?").await;
    let answer = started["reply"]["id"].as_str().unwrap().to_owned();
    follow(&mut ws, &answer, String::new(), 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let again = inbox_types(&app, &admin).await;
    assert_eq!(
        again.iter().filter(|t| *t == "assistant.fallback").count(),
        4,
        "{again:?}"
    );
    let stats: Value = app
        .get("/api/v1/assistant/analytics", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["days"][0]["fallbacks"], 8, "{stats}");
}

#[tokio::test]
async fn a_stream_cut_mid_answer_is_stored_incomplete_and_the_client_told() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    // The next provider is not tried once tokens have streamed.
    configure(&app, &fake, &["cut", "ok"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe(&format!("assistant:{conv}")).await;
    let started = send(&app, &token, &conv, "Tell me everything").await;
    let answer = started["reply"]["id"].as_str().unwrap().to_owned();
    let (text, done) = follow(&mut ws, &answer, String::new(), 0).await;
    assert_eq!(text, "Partial answer");
    assert_eq!(done["incomplete"], true);
    assert_eq!(done["status"], "incomplete");
    assert!(
        done["error"].as_str().unwrap().contains("mid-answer"),
        "{done}"
    );
    assert_eq!(done["usage"]["estimated"], true);
    assert!(fake.requests("ok").is_empty());
    let stored = messages(&app, &token, &conv).await;
    assert_eq!(stored[1]["status"], "incomplete");
    assert_eq!(stored[1]["content"], "Partial answer");
    assert!(stored[1]["error"].is_string());
}

#[tokio::test]
async fn a_cancel_on_one_node_stops_the_answer_streaming_on_another() {
    let fake = FakeOpenAi::start().await;
    let a = {
        let prefix = format!("relais-test-{}", uuid::Uuid::new_v4().simple());
        let url = std::env::var("RELAIS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        spawn_app_with(&[
            ("REDIS_URL", url.as_str()),
            ("RELAIS_REDIS_PREFIX", prefix.as_str()),
            (
                "RELAIS_JWT_SECRET",
                "a-cluster-wide-secret-for-the-tests-0123456789",
            ),
            ("RELAIS_ASSISTANT_ENCRYPTION_KEY", KEY),
        ])
        .await
    };
    let b = a.spawn_peer().await;
    configure(&a, &fake, &["endless"]).await;
    let (_, token) = a.user("ana@example.com", &["member"]).await;
    let conv = conversation(&a, &token).await;
    // The device listens on node B; the answer runs on node A.
    let mut ws = b.ws_connected(&token).await;
    ws.subscribe(&format!("assistant:{conv}")).await;
    let started = send(&a, &token, &conv, "Count forever").await;
    let answer = started["reply"]["id"].as_str().unwrap().to_owned();
    loop {
        let frame = ws.recv().await;
        if frame["data"]["type"] == "assistant.delta" {
            break;
        }
    }
    // Over RPC on node B.
    let reply = ws
        .request(json!({"type": "rpc", "method": "assistant.cancel", "data": {"run": answer}}))
        .await;
    assert_eq!(reply["type"], "rpc_result", "{reply}");
    let (_, done) = follow(&mut ws, &answer, String::new(), i64::MAX).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["incomplete"], true);
    eventually("the upstream request is dropped", || async {
        fake.dropped() >= 1
    })
    .await;
    let stored = messages(&b, &token, &conv).await;
    assert_eq!(stored[1]["status"], "cancelled");
    // A finished answer cannot be cancelled again.
    let res = b
        .post(
            &format!("/api/v1/assistant/runs/{answer}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 409);
}

/// A member's conversation with an assistant whose provider answers
/// slowly (twenty tokens over two seconds), framed every 5 ms. The fake
/// provider must outlive the test's requests.
async fn slow_conversation() -> (FakeOpenAi, TestApp, String, String) {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[("RELAIS_ASSISTANT_FRAME_MS", "5")]).await;
    configure(&app, &fake, &["slow"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    (fake, app, token, conv)
}

#[tokio::test]
async fn a_device_joining_mid_answer_gets_the_text_so_far_then_the_rest() {
    let (_fake, app, token, conv) = slow_conversation().await;
    let channel = format!("assistant:{conv}");
    let mut first = app.ws_connected(&token).await;
    first.subscribe(&channel).await;
    // Over RPC this time.
    let reply = first
        .request(json!({"type": "rpc", "method": "assistant.send",
                        "data": {"conversation": conv, "text": "Count slowly"}}))
        .await;
    assert_eq!(reply["type"], "rpc_result", "{reply}");
    let answer = reply["data"]["reply"]["id"].as_str().unwrap().to_owned();
    // Wait for a few frames on the first device.
    let mut seen = 0;
    while seen < 3 {
        let frame = first.recv().await;
        if frame["data"]["type"] == "assistant.delta" {
            seen += 1;
        }
    }
    // A second device subscribes now: the snapshot has the text so far.
    let mut late = app.ws_connected(&token).await;
    let subscribed = late.subscribe(&channel).await;
    let snapshot = subscribed["snapshot"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("snapshot: {subscribed}"))
        .iter()
        .find(|m| m["id"] == answer.as_str())
        .cloned()
        .unwrap();
    let have = snapshot["delta_seq"].as_i64().unwrap();
    let text = snapshot["content"].as_str().unwrap().to_owned();
    assert!(have >= 3, "{snapshot}");
    assert!(text.starts_with("w0 w1 w2 "), "{text}");
    let (late_text, done) = follow(&mut late, &answer, text, have).await;
    let expected: String = (0..20).map(|i| format!("w{i} ")).collect();
    assert_eq!(late_text, expected);
    assert_eq!(done["content"], expected.as_str());
}

#[tokio::test]
async fn the_text_so_far_is_stored_while_the_answer_streams() {
    let (_fake, app, token, conv) = slow_conversation().await;
    let answer = send(&app, &token, &conv, "Count slowly").await["reply"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected: String = (0..20).map(|i| format!("w{i} ")).collect();
    // The answer takes two seconds; its row shows the text so far before
    // it ends (batched saves), then the whole text.
    eventually("the text so far stored mid-answer", || async {
        messages(&app, &token, &conv).await.iter().any(|m| {
            let content = m["content"].as_str().unwrap_or_default();
            m["id"] == answer.as_str()
                && m["status"] == "streaming"
                && m["delta_seq"].as_i64().unwrap_or(0) >= 1
                && !content.is_empty()
                && expected.starts_with(content)
        })
    })
    .await;
    eventually("the whole answer stored", || async {
        messages(&app, &token, &conv)
            .await
            .iter()
            .any(|m| m["id"] == answer.as_str() && m["content"] == expected.as_str())
    })
    .await;
}

#[tokio::test]
async fn streams_per_user_are_limited() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[("RELAIS_ASSISTANT_MAX_STREAMS_PER_USER", "1")]).await;
    configure(&app, &fake, &["endless"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    let started = send(&app, &token, &conv, "one").await;
    let res = post_message(&app, &token, &conv, "two").await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    let run = started["run"].as_str().unwrap();
    let res = app
        .post(
            &format!("/api/v1/assistant/runs/{run}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 202);
    eventually("the cancelled answer frees the slot", || async {
        let stored = messages(&app, &token, &conv).await;
        stored.last().is_some_and(|m| m["status"] == "cancelled")
    })
    .await;
    send(&app, &token, &conv, "three").await;
}

#[tokio::test]
async fn sends_at_the_same_instant_cannot_pass_the_stream_limit() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[("RELAIS_ASSISTANT_MAX_STREAMS_PER_USER", "2")]).await;
    configure(&app, &fake, &["endless"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let mut conversations = Vec::new();
    for _ in 0..8 {
        conversations.push(conversation(&app, &token).await);
    }
    let sends = conversations
        .iter()
        .map(|conv| post_message(&app, &token, conv, "at once"));
    let statuses: Vec<u16> = futures_util::future::join_all(sends)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let started = statuses.iter().filter(|s| **s == 202).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((started, refused), (2, 6), "{statuses:?}");
}

#[tokio::test]
async fn provider_keys_are_encrypted_at_rest_and_never_returned() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    let admin = app.admin_token().await;
    let secret = "sk-live-do-not-leak-9f8e7d6c5b4a";
    let res = app
        .post(
            "/api/v1/assistant/providers",
            Some(&admin),
            json!({"name": "main", "base_url": fake.base_url("ok"), "api_key": secret}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created = res.text().await.unwrap();
    assert!(!created.contains(secret));
    let listed = app
        .get("/api/v1/assistant/providers", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !listed.contains(secret) && listed.contains("\"has_key\":true"),
        "{listed}"
    );
    // The provider receives the key in clear…
    let id = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin_res = app
        .post(
            "/api/v1/assistant/assistants",
            Some(&admin),
            json!({"name": "A", "model": "m", "providers": [id]}),
        )
        .await;
    assert_eq!(admin_res.status(), 201);
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    send(&app, &token, &conv, "hi").await;
    eventually("the answer completes", || async {
        messages(&app, &token, &conv).await[1]["status"] == "complete"
    })
    .await;
    // …the store never does.
    let stored: String = sqlx::query_scalar("SELECT api_key_enc FROM assistant_providers")
        .fetch_one(&app.state.store.pool)
        .await
        .unwrap();
    assert!(!stored.contains(secret));
    if app.env().get("DATABASE_URL").is_none() {
        let mut found = false;
        for entry in std::fs::read_dir(&app.data_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                found |= bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            }
        }
        assert!(!found, "the key is in a database file");
    }
}

#[tokio::test]
async fn conversations_and_providers_stay_within_their_tenant_and_user() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    configure(&app, &fake, &["ok"]).await;
    let (_, ana) = app.user("ana@example.com", &["member"]).await;
    let (_, bob) = app.user("bob@example.com", &["member"]).await;
    let conv = conversation(&app, &ana).await;
    let path = format!("/api/v1/assistant/conversations/{conv}/messages");
    // Another user of the tenant.
    assert_eq!(app.get(&path, Some(&bob)).await.status(), 404);
    let res = app.post(&path, Some(&bob), json!({"text": "hi"})).await;
    assert_eq!(res.status(), 404);
    let mut bob_ws = app.ws_connected(&bob).await;
    let refused = bob_ws
        .request(json!({"type": "subscribe", "channel": format!("assistant:{conv}")}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // Another tenant.
    let (_, out) = app.other_tenant_admin().await;
    let providers: Value = app
        .get("/api/v1/assistant/providers", Some(&out))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(providers["providers"], json!([]));
    assert_eq!(app.get(&path, Some(&out)).await.status(), 404);
    let res = app
        .post("/api/v1/assistant/conversations", Some(&out), json!({}))
        .await;
    assert_eq!(res.status(), 503, "the other tenant has no assistant");
    let mut out_ws = app.ws_connected(&out).await;
    let refused = out_ws
        .request(json!({"type": "subscribe", "channel": format!("assistant:{conv}")}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
}

#[tokio::test]
async fn conversations_past_their_retention_are_purged() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[("RELAIS_ASSISTANT_PURGE_INTERVAL_SECS", "0.1")]).await;
    configure(&app, &fake, &["ok"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let old = conversation(&app, &token).await;
    let recent = conversation(&app, &token).await;
    for conv in [&old, &recent] {
        send(&app, &token, conv, "hi").await;
        eventually("the answer completes", || async {
            messages(&app, &token, conv).await[1]["status"] == "complete"
        })
        .await;
    }
    // Members may not set the retention; admins may, within 1-3650 days.
    let put = |bearer: String, body: Value| {
        let app = &app;
        async move {
            app.http
                .put(app.url("/api/v1/assistant/settings"))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let admin = app.admin_token().await;
    assert_eq!(put(token.clone(), json!({"retention_days": 3})).await, 403);
    assert_eq!(put(admin.clone(), json!({"retention_days": 0})).await, 422);
    assert_eq!(put(admin.clone(), json!({"retention_days": 5})).await, 200);
    // Six days without activity: past the tenant's five.
    sqlx::query("UPDATE assistant_conversations SET updated_at = updated_at - $1 WHERE id = $2")
        .bind(6i64 * 86_400_000)
        .bind(&old)
        .execute(&app.state.store.pool)
        .await
        .unwrap();
    eventually("the old conversation is purged", || async {
        app.get(
            &format!("/api/v1/assistant/conversations/{old}/messages"),
            Some(&token),
        )
        .await
        .status()
            == 404
    })
    .await;
    assert_eq!(messages(&app, &token, &recent).await.len(), 2);
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM assistant_messages WHERE conversation_id = $1")
            .bind(&old)
            .fetch_one(&app.state.store.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn the_daily_token_quota_of_a_tenant_stops_new_answers() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[("RELAIS_ASSISTANT_TOKENS_PER_DAY", "10")]).await;
    configure(&app, &fake, &["ok"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    send(&app, &token, &conv, "hi").await;
    eventually("the answer completes", || async {
        messages(&app, &token, &conv).await[1]["status"] == "complete"
    })
    .await;
    // 11 + 4 tokens used: over the quota of 10.
    let res = post_message(&app, &token, &conv, "more").await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_quota_exceeded");
}

#[tokio::test]
async fn tokens_arriving_faster_than_the_frame_interval_are_coalesced() {
    let fake = FakeOpenAi::start().await;
    // Frames at most every 5 s: the thousand tokens, sent at once, make
    // the first frame (the first token, at once) and one last frame.
    let app = app_with(&[("RELAIS_ASSISTANT_FRAME_MS", "5000")]).await;
    configure(&app, &fake, &["fast"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let conv = conversation(&app, &token).await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe(&format!("assistant:{conv}")).await;
    let started = send(&app, &token, &conv, "Go fast").await;
    let answer = started["reply"]["id"].as_str().unwrap().to_owned();
    let mut frames = 0;
    let mut text = String::new();
    let done = loop {
        let frame = ws.recv().await;
        match frame["data"]["type"].as_str() {
            Some("assistant.delta") => {
                frames += 1;
                text.push_str(frame["data"]["text"].as_str().unwrap());
            }
            Some("assistant.done") => break frame["data"].clone(),
            _ => {}
        }
    };
    let expected: String = (0..1000).map(|i| format!("t{i} ")).collect();
    assert_eq!(text, expected);
    assert_eq!(done["message"], answer.as_str());
    assert_eq!(done["seq"], frames);
    assert!(frames <= 3, "{frames} frames for 1000 tokens");
    assert_eq!(done["usage"]["completion_tokens"], 1000);
}

const SHOP: &str = "https://shop.example.com";

/// A request from a page of `origin`, with a visitor's token if given.
fn from_page(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    origin: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("origin", origin);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req
}

/// A widget for `assistant` on the page origin [`SHOP`] (admin token in
/// `admin`); answers it with its `public_key`.
async fn shop_widget(app: &TestApp, admin: &str, assistant: &str) -> Value {
    let res = app
        .post(
            "/api/v1/assistant/widgets",
            Some(admin),
            json!({"name": "Shop", "assistant": assistant, "origins": [SHOP]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

/// A visitor admitted by `widget` from [`SHOP`]: its visitor token.
async fn visitor_token(app: &TestApp, widget: &Value) -> String {
    let res = from_page(
        app,
        reqwest::Method::POST,
        "/api/v1/widget/sessions",
        SHOP,
        None,
    )
    .json(&json!({"key": widget["public_key"]}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    session["token"].as_str().unwrap().to_owned()
}

async fn error_code(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_widget_admits_visitors_from_its_origins_only_and_streams_their_answers() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    let (assistant, _) = configure(&app, &fake, &["ok"]).await;
    let admin = app.admin_token().await;
    let res = app
        .post(
            "/api/v1/assistant/widgets",
            Some(&admin),
            json!({"name": "Shop", "assistant": assistant, "origins": [SHOP, "https://shop.example.com/"],
                   "messages_per_visitor": 2, "visitors_per_hour": 3}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let widget: Value = res.json().await.unwrap();
    assert_eq!(widget["origins"], json!([SHOP]));
    let key = widget["public_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pk_"), "{key}");
    let bad = app
        .post(
            "/api/v1/assistant/widgets",
            Some(&admin),
            json!({"name": "Bad", "assistant": assistant, "origins": ["https://x.example/path"]}),
        )
        .await;
    assert_eq!(error_code(bad).await, (422, "invalid_request".into()));

    // The key works from a listed origin only.
    let start = |origin: &'static str, key: String| {
        from_page(
            &app,
            reqwest::Method::POST,
            "/api/v1/widget/sessions",
            origin,
            None,
        )
        .json(&json!({"key": key}))
        .send()
    };
    let res = start("https://evil.example.com", key.clone())
        .await
        .unwrap();
    assert_eq!(error_code(res).await, (403, "forbidden".into()));
    let res = start(SHOP, "pk_unknown".into()).await.unwrap();
    assert_eq!(error_code(res).await, (404, "not_found".into()));
    let res = start(SHOP, key.clone()).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["access-control-allow-origin"], SHOP);
    let session: Value = res.json().await.unwrap();
    let token = session["token"].as_str().unwrap().to_owned();
    let channel = session["channel"].as_str().unwrap().to_owned();

    // A visitor token opens no user route, and no channel but its own.
    assert_eq!(app.get("/api/v1/inbox", Some(&token)).await.status(), 401);
    let sse = |origin: &'static str, channel: String| {
        from_page(
            &app,
            reqwest::Method::GET,
            &format!("/api/v1/sse?channels={channel}"),
            origin,
            Some(&token),
        )
        .send()
    };
    assert_eq!(sse(SHOP, "broadcast".into()).await.unwrap().status(), 403);
    assert_eq!(
        sse("https://evil.example.com", channel.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    let response = sse(SHOP, channel.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], SHOP);
    let mut stream = crate::sse::SseReader {
        response,
        buffer: String::new(),
    };

    // Messages: from the token's origin only, then the answer streams.
    let send = |origin: &'static str| {
        from_page(
            &app,
            reqwest::Method::POST,
            "/api/v1/widget/messages",
            origin,
            Some(&token),
        )
        .json(&json!({"text": "Do you ship to Lyon?"}))
        .send()
    };
    let res = send("https://evil.example.com").await.unwrap();
    assert_eq!(error_code(res).await, (403, "forbidden".into()));
    let res = send(SHOP).await.unwrap();
    assert_eq!(res.status(), 202);
    let started: Value = res.json().await.unwrap();
    assert_eq!(started["messages_left"], 1);
    let done = loop {
        let event = stream.next().await;
        if event.data["data"]["type"] == "assistant.done" {
            break event.data["data"].clone();
        }
    };
    assert_eq!(done["content"], "Hello world!");
    assert_eq!(done["message"], started["run"]);
    let res = from_page(
        &app,
        reqwest::Method::GET,
        "/api/v1/widget/messages",
        SHOP,
        Some(&token),
    )
    .send()
    .await
    .unwrap();
    let history: Value = res.json().await.unwrap();
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["Do you ship to Lyon?", "Hello world!"]);

    // The widget's limits: messages per visitor, visitors per hour.
    assert_eq!(send(SHOP).await.unwrap().status(), 202);
    let res = send(SHOP).await.unwrap();
    assert_eq!(error_code(res).await, (429, "visitor_message_limit".into()));
    for _ in 0..2 {
        assert_eq!(start(SHOP, key.clone()).await.unwrap().status(), 201);
    }
    let res = start(SHOP, key.clone()).await.unwrap();
    assert_eq!(error_code(res).await, (429, "too_many_visitors".into()));

    // Disabling the widget ends its visitors' sessions.
    let id = widget["id"].as_str().unwrap();
    let res = app
        .patch(
            &format!("/api/v1/assistant/widgets/{id}"),
            &admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(res.status(), 200);
    // The open stream is closed, and the token opens nothing more.
    loop {
        let event = stream.next().await;
        if event.event == "close" {
            assert_eq!(event.data["code"], 4003, "{:?}", event.data);
            break;
        }
    }
    assert_eq!(send(SHOP).await.unwrap().status(), 401);
    assert_eq!(sse(SHOP, channel).await.unwrap().status(), 401);
}

#[tokio::test]
async fn guided_steps_save_each_answer_and_lead_the_model_to_the_next_step() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    let (assistant, _) = configure(&app, &fake, &["ok"]).await;
    let admin = app.admin_token().await;
    let path = format!("/api/v1/assistant/assistants/{assistant}");
    let patch = |body: Value| app.patch(&path, &admin, body);
    let res = patch(json!({"steps": [{"key": "goal"}]})).await;
    assert_eq!(error_code(res).await, (422, "invalid_request".into()));
    let res = patch(json!({"steps": [
        {"key": "goal", "prompt": "Quels sont vos objectifs ?"},
        {"key": "targets", "prompt": "Quelles cibles ?", "instructions": "Propose three targets."}
    ]}))
    .await;
    assert_eq!(res.status(), 200);
    let (_, token) = app.user("ana@example.com", &["member"]).await;

    // The conversation opens on the first step's question.
    let conv = conversation(&app, &token).await;
    let first = messages(&app, &token, &conv).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["role"], "assistant");
    assert_eq!(first[0]["step"], "goal");
    assert_eq!(first[0]["content"], "Quels sont vos objectifs ?");

    // Two devices showing the first step answer it at once: one wins. They
    // name the step they show; without it, a message arriving after the
    // first one was stored would answer the next step, as it should.
    let path_messages = format!("/api/v1/assistant/conversations/{conv}/messages");
    let answer_goal = |text: &'static str| {
        app.post(
            &path_messages,
            Some(&token),
            json!({"text": text, "step": "goal"}),
        )
    };
    let answers =
        futures_util::future::join_all([answer_goal("Vendre plus"), answer_goal("Autre chose")])
            .await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [202, 409], "one answer per step");
    let winner = messages(&app, &token, &conv).await[1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the first answer ends", || async {
        messages(&app, &token, &conv).await[2]["status"] == "complete"
    })
    .await;
    let stored = messages(&app, &token, &conv).await;
    assert_eq!(stored[1]["step"], "goal");
    assert_eq!(
        stored[2]["step"], "targets",
        "the answer asks the next step"
    );
    let request = fake.requests("ok").last().unwrap().clone();
    let system: Vec<&str> = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(
        system
            .iter()
            .any(|s| s.contains("Quelles cibles ?") && s.contains("Propose three targets.")),
        "{system:?}"
    );

    send(&app, &token, &conv, "Les PME").await;
    let res = app
        .get(
            &format!("/api/v1/assistant/conversations/{conv}/messages"),
            Some(&token),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["conversation"]["answers"],
        json!({"goal": winner, "targets": "Les PME"})
    );
    assert_eq!(
        body["conversation"]["step"],
        Value::Null,
        "the steps are done"
    );
    let last = fake.requests("ok").last().unwrap().clone();
    let told = last["messages"].to_string();
    assert!(told.contains("Every step is answered"), "{told}");

    // One assistant: read, refused change, delete with its conversations.
    let res = app.get(&path, Some(&token)).await;
    let read: Value = res.json().await.unwrap();
    assert_eq!(read["steps"][1]["key"], "targets");
    let res = patch(json!({"temperature": 3})).await;
    assert_eq!(error_code(res).await, (422, "invalid_request".into()));
    let res = patch(json!({"name": "Guide", "temperature": null})).await;
    let changed: Value = res.json().await.unwrap();
    assert_eq!(
        (changed["name"].as_str(), changed["temperature"].is_null()),
        (Some("Guide"), true)
    );
    let res = app.delete(&path, &admin).await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.get(&path, Some(&token)).await.status(), 404);
    let res = app
        .get(
            &format!("/api/v1/assistant/conversations/{conv}/messages"),
            Some(&token),
        )
        .await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn a_visitor_is_not_shown_the_providers_errors() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[]).await;
    let (assistant, _) = configure(&app, &fake, &["error500"]).await;
    let admin = app.admin_token().await;
    let widget = shop_widget(&app, &admin, &assistant).await;
    let token = visitor_token(&app, &widget).await;
    let token = token.as_str();
    let res = from_page(
        &app,
        reqwest::Method::POST,
        "/api/v1/widget/messages",
        SHOP,
        Some(token),
    )
    .json(&json!({"text": "Hello?"}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 202);
    let history = || async {
        let res = from_page(
            &app,
            reqwest::Method::GET,
            "/api/v1/widget/messages",
            SHOP,
            Some(token),
        )
        .send()
        .await
        .unwrap();
        let body: Value = res.json().await.unwrap();
        body["messages"][1].clone()
    };
    eventually("the failed answer is stored", || async {
        history().await["status"] == "incomplete"
    })
    .await;
    let answer = history().await;
    assert_eq!(
        answer["error"],
        "the assistant could not answer; try again later"
    );
    // The tenant's admins still see why, in the analytics' failures.
    let res = app.get("/api/v1/assistant/analytics", Some(&admin)).await;
    let figures: Value = res.json().await.unwrap();
    assert!(figures.to_string().contains("\"failures\":1"), "{figures}");
}

#[tokio::test]
async fn visitor_sessions_expired_for_a_day_are_purged() {
    let fake = FakeOpenAi::start().await;
    let app = app_with(&[("RELAIS_ASSISTANT_PURGE_INTERVAL_SECS", "0.1")]).await;
    let (assistant, _) = configure(&app, &fake, &["ok"]).await;
    let admin = app.admin_token().await;
    let widget = shop_widget(&app, &admin, &assistant).await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        tokens.push(visitor_token(&app, &widget).await);
    }
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM visitor_sessions")
            .fetch_one(&app.state.store.pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 2);
    // One session expired two days ago; the other is live.
    sqlx::query(
        "UPDATE visitor_sessions SET expires_at = $1 WHERE id = (SELECT MIN(id) FROM visitor_sessions)",
    )
    .bind(relais::ids::now_millis() - 2 * 86_400_000)
    .execute(&app.state.store.pool)
    .await
    .unwrap();
    eventually("the expired session is purged", || async {
        count().await == 1
    })
    .await;
    let live = futures_util::future::join_all(tokens.iter().map(|t| {
        from_page(
            &app,
            reqwest::Method::GET,
            "/api/v1/widget/messages",
            SHOP,
            Some(t),
        )
        .send()
    }))
    .await;
    let statuses: Vec<u16> = live
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses,
        [401, 200],
        "the purged token no longer works, the live one does"
    );
}
