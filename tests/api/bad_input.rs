//! Bad input over WebSocket and REST: each gets a documented error frame,
//! HTTP error or close code, and no other connection notices.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use relais::auth::tokens::JwtKeys;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

fn signing_keys(app: &TestApp) -> JwtKeys {
    let secret = std::fs::read_to_string(app.data_dir.join("jwt-secret")).unwrap();
    JwtKeys::new(&SecretString::from(secret.trim().to_owned()))
}

/// Opens a connection, sends `first`, returns the error code and close code.
async fn refused_connect(app: &TestApp, first: Message) -> (Option<String>, Option<u16>) {
    let mut ws = app.ws().await;
    ws.send_raw(first).await;
    let mut code = None;
    loop {
        match ws.next_event().await {
            Event::Json(frame) => code = frame["code"].as_str().map(str::to_owned),
            Event::Closed(close) => return (code, close),
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_4001_or_4002() {
    let app = spawn_app().await;
    let good = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let good = good["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();

    let connect =
        |token: String| Message::text(json!({"type": "connect", "token": token}).to_string());
    // Forged: payload changed, signature kept.
    let mut forged_claims = claims.clone();
    forged_claims["sub"] = json!("someone-else");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged_claims.to_string()),
        parts[2]
    );
    // alg=none, unsigned.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    // RS256 header on an HMAC signature (algorithm confusion).
    let rs = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        parts[1],
        parts[2]
    );
    // Correctly signed, but claiming another tenant than the session's.
    let keys = signing_keys(&app);
    let other = app
        .state
        .auth
        .create_tenant("other", "Other")
        .await
        .unwrap();
    let (wrong_tenant, _) = keys
        .issue(
            &other.id,
            &claims["sub"].as_str().unwrap().into(),
            &claims["sid"].as_str().unwrap().into(),
            60,
        )
        .unwrap();
    for (name, token) in [
        ("forged", forged),
        ("none", none),
        ("rs256", rs),
        ("wrong tenant", wrong_tenant),
        ("garbage", "abc".into()),
    ] {
        let (code, close) = refused_connect(&app, connect(token)).await;
        assert_eq!(close, Some(4001), "{name}");
        assert_eq!(code.as_deref(), Some("invalid_token"), "{name}");
    }
    // Expired two seconds ago: past the one second of tolerated clock skew.
    let expired = expired_token(&app, &claims, 2);
    let (code, close) = refused_connect(&app, connect(expired)).await;
    assert_eq!(
        (code.as_deref(), close),
        (Some("token_expired"), Some(4002))
    );
    assert!(app.metric("relais_auth_failures_total").await >= 6.0);
}

/// A token of the session in `claims`, signed with the hub's key, that
/// expired `ago` seconds ago.
fn expired_token(app: &TestApp, claims: &Value, ago: u64) -> String {
    signing_keys(app)
        .issue_expiring_at(
            &claims["tid"].as_str().unwrap().into(),
            &claims["sub"].as_str().unwrap().into(),
            &claims["sid"].as_str().unwrap().into(),
            relais::auth::tokens::unix_secs() - ago,
        )
        .unwrap()
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_token_that_expired_two_seconds_ago_is_refused_over_rest_and_websocket() {
    let app = spawn_app().await;
    let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let claims = claims_of(login["access_token"].as_str().unwrap());
    let expired = expired_token(&app, &claims, 2);

    let res = app.get("/api/v1/me", Some(&expired)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "token_expired"
    );
    let (code, close) = refused_connect(
        &app,
        Message::text(json!({"type": "connect", "token": expired}).to_string()),
    )
    .await;
    assert_eq!(
        (code.as_deref(), close),
        (Some("token_expired"), Some(4002))
    );
    // The same session with a live token is still accepted.
    let res = app.get("/api/v1/me", login["access_token"].as_str()).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_first_frame_must_be_a_connect_command() {
    let app = spawn_app().await;
    let (code, close) = refused_connect(
        &app,
        Message::text(r#"{"type":"subscribe","channel":"broadcast"}"#),
    )
    .await;
    assert_eq!(
        (code.as_deref(), close),
        (Some("malformed_frame"), Some(4000))
    );
    let (code, close) = refused_connect(&app, Message::binary(vec![1, 2, 3])).await;
    assert_eq!(
        (code.as_deref(), close),
        (Some("unsupported_frame"), Some(4000))
    );
    let token = app.admin_token().await;
    let (code, close) = refused_connect(
        &app,
        Message::text(json!({"type": "connect", "token": token, "protocol": 9}).to_string()),
    )
    .await;
    assert_eq!(
        (code.as_deref(), close),
        (Some("unsupported_protocol"), Some(4000))
    );
}

#[tokio::test]
async fn a_connection_that_never_authenticates_is_closed() {
    let app = spawn_app_with(&[("RELAIS_WS_AUTH_TIMEOUT_SECS", "0.5")]).await;
    let mut ws = app.ws().await;
    assert_eq!(ws.closed().await, Some(4001));
}

#[tokio::test]
async fn malformed_and_unknown_commands_get_error_frames_and_the_connection_stays() {
    let app = spawn_app_with(&[("RELAIS_MAX_PUBLICATION_BYTES", "1000")]).await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    let mut bystander = app.ws_connected(&token).await;
    bystander.subscribe("broadcast").await;

    ws.send_raw(Message::text("{not json")).await;
    assert_eq!(ws.recv().await["code"], "malformed_frame");
    ws.send_raw(Message::text(r#"{"id":7,"type":"teleport"}"#))
        .await;
    let reply = ws.recv().await;
    assert_eq!(
        (reply["id"].as_u64(), reply["code"].as_str()),
        (Some(7), Some("unknown_command"))
    );
    ws.send_raw(Message::text(r#"{"id":8,"type":"subscribe"}"#))
        .await;
    let reply = ws.recv().await;
    assert_eq!(
        (reply["id"].as_u64(), reply["code"].as_str()),
        (Some(8), Some("malformed_frame"))
    );
    ws.send_raw(Message::binary(vec![0u8; 16])).await;
    assert_eq!(ws.recv().await["code"], "unsupported_frame");
    assert_eq!(
        ws.request(json!({"type": "connect", "token": token})).await["code"],
        "already_connected"
    );
    let cases = [
        (
            json!({"type": "subscribe", "channel": "nope:1"}),
            "channel_not_found",
        ),
        (
            json!({"type": "subscribe", "channel": "Bad Channel"}),
            "invalid_channel",
        ),
        (
            json!({"type": "subscribe", "channel": "broadcast:extra"}),
            "invalid_channel",
        ),
        (
            json!({"type": "unsubscribe", "channel": "broadcast"}),
            "not_subscribed",
        ),
        (
            json!({"type": "publish", "channel": "broadcast", "data": "x".repeat(2000)}),
            "payload_too_large",
        ),
    ];
    for (command, code) in cases {
        assert_eq!(ws.request(command.clone()).await["code"], code, "{command}");
    }
    ws.subscribe("broadcast").await;
    assert_eq!(
        ws.request(json!({"type": "subscribe", "channel": "broadcast"}))
            .await["code"],
        "already_subscribed"
    );
    assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(
        bystander.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    assert!(app.metric("relais_command_errors_total").await >= 10.0);
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_others_are_unaffected() {
    let app = spawn_app_with(&[("RELAIS_WS_MAX_MESSAGE_BYTES", "4096")]).await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    let mut bystander = app.ws_connected(&token).await;
    ws.send_raw(Message::text("x".repeat(10_000))).await;
    assert_eq!(ws.closed().await, Some(1009));
    assert_eq!(
        bystander.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    };
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    let invalid = vec![b'{', 0xff, 0xfe, b'}'];
    let frame = Frame::message(invalid, OpCode::Data(Data::Text), true);
    ws.send_raw(Message::Frame(frame)).await;
    assert_eq!(ws.closed().await, Some(1007));
}

#[tokio::test]
async fn a_flood_of_commands_is_refused_then_disconnected_with_4005() {
    let app = spawn_app_with(&[
        ("RELAIS_WS_COMMANDS_PER_SEC", "5"),
        ("RELAIS_WS_COMMANDS_BURST", "10"),
    ])
    .await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    let mut bystander = app.ws_connected(&token).await;
    for i in 0..200 {
        ws.send_raw(Message::text(json!({"id": i, "type": "ping"}).to_string()))
            .await;
    }
    let (mut pongs, mut limited) = (0, 0);
    let close = loop {
        match ws.next_event().await {
            Event::Json(f) if f["type"] == "pong" => pongs += 1,
            Event::Json(f) if f["code"] == "rate_limited" => limited += 1,
            Event::Json(f) => panic!("unexpected {f}"),
            Event::Closed(code) => break code,
        }
    };
    assert_eq!(close, Some(4005));
    assert!((10..200).contains(&pongs), "{pongs} pongs");
    assert!(limited >= 1, "refusals came before the disconnect");
    assert_eq!(
        bystander.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn rest_errors_are_typed_json() {
    let app = spawn_app().await;
    let key = app.api_key(&["publish"]).await;
    let raw = |body: &'static str| {
        app.http
            .post(app.url("/api/v1/publish"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let res = raw("{oops").await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "bad_request"
    );
    let res = raw(r#"{"channel":"broadcast"}"#).await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_body"
    );
    let res = app
        .post(
            "/api/v1/publish",
            None,
            json!({"channel": "broadcast", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "unauthenticated"
    );
    let res = app
        .post(
            "/api/v1/publish",
            Some(&key),
            json!({"channel": "zzz", "data": 1}),
        )
        .await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "channel_not_found"
    );
    let res = app
        .post("/api/v1/auth/login", None, json!({"tenant": "default"}))
        .await;
    assert_eq!(res.status(), 422);
    let res = app.get("/api/v1/nothing-here", None).await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415, "missing content type");
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_media_type"
    );
}

/// The error code of a JSON error response, after checking its status.
async fn error_code(res: reqwest::Response, status: u16) -> String {
    assert_eq!(res.status(), status);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        res.headers()
    );
    let body: Value = res.json().await.expect("a JSON error body");
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"].as_str().unwrap().to_owned()
}

/// `levels` arrays inside one another around `1`.
fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[tokio::test]
async fn json_nested_deeper_than_64_levels_is_refused_by_every_rest_body() {
    let app = spawn_app().await;
    let key = app.api_key(&["publish"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let post = |path: &str, bearer: &str, body: String| {
        app.http
            .post(app.url(path))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // The body's object is level 1: `data` may hold 63 more.
    let body = |levels| format!(r#"{{"channel":"broadcast","data":{}}}"#, nested(levels));
    let res = post("/api/v1/publish", &key, body(63)).await.unwrap();
    assert_eq!(res.status(), 200);
    for levels in [64, 32_000] {
        let res = post("/api/v1/publish", &key, body(levels)).await.unwrap();
        assert_eq!(res.status(), 400, "{levels} levels");
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["code"], "too_deep");
        assert!(
            error["error"]["message"].as_str().unwrap().contains("64"),
            "{error}"
        );
    }
    let batch = format!(
        r#"{{"publications":[{{"channel":"broadcast","data":{}}}]}}"#,
        nested(70)
    );
    let res = post("/api/v1/publish/batch", &key, batch).await.unwrap();
    assert_eq!(error_code(res, 400).await, "too_deep");
    // A parsed body (login), and an optional one (read-all).
    let login = format!(r#"{{"tenant":"default","email":{}}}"#, nested(100));
    let res = post("/api/v1/auth/login", "", login).await.unwrap();
    assert_eq!(error_code(res, 400).await, "too_deep");
    let read_all = format!(r#"{{"category":{}}}"#, nested(100));
    let res = post("/api/v1/inbox/read-all", &token, read_all)
        .await
        .unwrap();
    assert_eq!(error_code(res, 400).await, "too_deep");
    // Nothing was published by the refused requests.
    let res = post(
        "/api/v1/publish",
        &key,
        r#"{"channel":"broadcast","data":"[[[[ in a string"}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["offset"], 2);
}

#[tokio::test]
async fn json_bodies_need_a_json_content_type() {
    let app = spawn_app().await;
    let key = app.api_key(&["publish"]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let publication = r#"{"channel":"broadcast","data":1}"#;
    let batch = r#"{"publications":[{"channel":"broadcast","data":1}]}"#;
    for (path, body) in [
        ("/api/v1/publish", publication),
        ("/api/v1/publish/batch", batch),
    ] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let mut req = app.http.post(app.url(path)).bearer_auth(&key).body(body);
            if let Some(content_type) = content_type {
                req = req.header("content-type", content_type);
            }
            let res = req.send().await.unwrap();
            assert_eq!(
                error_code(res, 415).await,
                "unsupported_media_type",
                "{path} with {content_type:?}"
            );
        }
        let res = app
            .http
            .post(app.url(path))
            .bearer_auth(&key)
            .header("content-type", "Application/JSON; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    // An optional body needs the header only when there is one.
    let res = app
        .http
        .post(app.url("/api/v1/inbox/read-all"))
        .bearer_auth(&token)
        .body(r#"{"category":"general"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res, 415).await, "unsupported_media_type");
    let res = app
        .http
        .post(app.url("/api/v1/inbox/read-all"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn errors_made_by_the_framework_are_json_too() {
    let app = spawn_app().await;
    let key = app.api_key(&["publish", "projects"]).await;
    let token = app.admin_token().await;
    // Above the 4 MiB body limit: a body read raw, and one parsed.
    let big = format!(
        r#"{{"channel":"broadcast","data":"{}"}}"#,
        "x".repeat(5 << 20)
    );
    for (path, bearer) in [("/api/v1/publish", &key), ("/api/v1/auth/login", &token)] {
        let res = app
            .http
            .post(app.url(path))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(res, 413).await, "payload_too_large", "{path}");
    }
    // A method the route does not serve: JSON, and the `Allow` header kept.
    let res = app
        .http
        .delete(app.url("/api/v1/publish"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(error_code(res, 405).await, "method_not_allowed");
    let res = app.http.put(app.url("/healthz")).send().await.unwrap();
    assert_eq!(error_code(res, 405).await, "method_not_allowed");
    // A path segment that is not UTF-8, which the router cannot decode.
    let res = app.get("/api/v1/projects/%FF%FE", Some(&key)).await;
    assert_eq!(error_code(res, 400).await, "bad_request");
    // A query the streaming endpoint cannot parse (as every query: 422
    // `invalid_query`), and a plain GET on /ws.
    let res = app.get("/api/v1/sse", Some(&token)).await;
    assert_eq!(error_code(res, 422).await, "invalid_query");
    let res = app.get("/ws", None).await;
    let status = res.status().as_u16();
    assert!(matches!(status, 400 | 426), "{status}");
    error_code(res, status).await;
}

#[tokio::test]
async fn the_websocket_applies_the_same_nesting_limit_as_rest() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe("broadcast").await;
    // The command's object is level 1, as a REST body's is.
    let command = |levels| {
        format!(
            r#"{{"id":7,"type":"publish","channel":"broadcast","data":{}}}"#,
            nested(levels)
        )
    };
    ws.send_raw(Message::text(command(63))).await;
    assert_eq!(ws.recv().await["type"], "published");
    assert_eq!(ws.publications(1).await[0]["offset"], 1);
    ws.send_raw(Message::text(command(64))).await;
    let refused = ws.recv().await;
    assert_eq!(refused["code"], "too_deep", "{refused}");
    // Still connected, and nothing was published.
    let history = ws
        .request(json!({"type": "history", "channel": "broadcast"}))
        .await;
    assert_eq!(history["offset"], 1);
}
