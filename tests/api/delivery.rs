//! Delivery engine: slow consumers, heartbeats and timeouts, token refresh on
//! a live socket, limits, and graceful shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::{MaybeTlsStream, tungstenite::Message};

use crate::helpers::*;

#[tokio::test]
async fn a_slow_consumer_is_closed_while_a_fast_one_receives_everything() {
    let app = spawn_app_with(&[("RELAIS_WS_OUTBOUND_QUEUE_BYTES", "2097152")]).await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let key = app.api_key(&["publish"]).await;
    let mut slow = app.ws_connected(&token).await;
    slow.subscribe("broadcast").await;
    let mut fast = app.ws_connected(&token).await;
    fast.subscribe("broadcast").await;

    // The fast client reads continuously in its own task.
    let reader = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(WAIT, fast.stream.next()).await {
            if let Message::Text(t) = msg {
                let frame: Value = serde_json::from_str(&t).unwrap();
                if frame["type"] == "pub" {
                    offsets.push(frame["offset"].as_u64().unwrap());
                    if frame["data"]["last"] == true {
                        break;
                    }
                }
            }
        }
        offsets
    });

    // The slow client never reads: kernel buffers fill, then its 2 MiB queue.
    let chunk = "x".repeat(4000);
    let mut sent = 0u64;
    for _ in 0..400 {
        let batch: Vec<Value> = (0..50)
            .map(|_| json!({"channel": "broadcast", "data": {"pad": chunk}}))
            .collect();
        let res = app
            .post(
                "/api/v1/publish/batch",
                Some(&key),
                json!({ "publications": batch }),
            )
            .await;
        assert_eq!(res.status(), 200);
        sent += 50;
        if app.metric("relais_slow_consumer_closes_total").await >= 1.0 {
            break;
        }
    }
    assert_eq!(
        app.metric("relais_slow_consumer_closes_total").await,
        1.0,
        "exactly the slow client was closed"
    );
    app.publish(&key, "broadcast", json!({"last": true})).await;
    sent += 1;

    let offsets = reader.await.unwrap();
    assert_eq!(
        offsets,
        (1..=sent).collect::<Vec<_>>(),
        "the fast client got every publication in order"
    );
    assert_eq!(slow.closed().await, Some(4004));
    assert_eq!(app.metric("relais_outbound_queued_bytes").await, 0.0);
}

#[tokio::test]
async fn the_token_can_be_refreshed_on_a_live_connection() {
    let app = spawn_app().await;
    let login = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut ws = app
        .ws_connected(login["access_token"].as_str().unwrap())
        .await;
    let refreshed: Value = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": login["refresh_token"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let reply = ws
        .request(json!({"type": "refresh", "token": refreshed["access_token"]}))
        .await;
    assert_eq!(reply["type"], "refreshed");
    assert!(reply["expires_at"].as_u64().unwrap() > 0);
    let expires_in = reply["expires_in"].as_u64().unwrap();
    assert!((1790..=1800).contains(&expires_in), "{expires_in}");
    // A token of someone else is refused and the connection stays.
    let (_, other) = app.user("ana@example.com", &["member"]).await;
    assert_eq!(
        ws.request(json!({"type": "refresh", "token": other})).await["code"],
        "wrong_user"
    );
    assert_eq!(
        ws.request(json!({"type": "refresh", "token": "garbage"}))
            .await["code"],
        "invalid_token"
    );
    assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn an_expired_token_closes_the_connection_with_4002() {
    let app = spawn_app_with(&[
        ("RELAIS_ACCESS_TOKEN_TTL_SECS", "1"),
        ("RELAIS_WS_PING_INTERVAL_SECS", "0.5"),
    ])
    .await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    assert_eq!(ws.closed().await, Some(4002));
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(&[
        ("RELAIS_WS_PING_INTERVAL_SECS", "0.3"),
        ("RELAIS_WS_IDLE_TIMEOUT_SECS", "1"),
    ])
    .await;
    let token = app.admin_token().await;
    let ws = app.ws_connected(&token).await;
    // A WebSocket client library answers pings whenever it reads, so read the
    // raw TCP stream instead: this peer never sends anything back.
    let MaybeTlsStream::Plain(mut tcp) = ws.stream.into_inner() else {
        unreachable!("plain TCP")
    };
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut bytes))
        .await
        .expect("the server ends the connection")
        .expect("read");
    // Server frames are unmasked: a close frame is 0x88, its length, then the code.
    let code = bytes
        .windows(4)
        .find(|w| w[0] == 0x88)
        .map(|w| u16::from_be_bytes([w[2], w[3]]));
    assert_eq!(code, Some(4006));
    assert!(bytes.starts_with(&[0x89, 0x00]), "pings came first");
    assert_eq!(app.metric("relais_connections").await, 0.0);
}

#[tokio::test]
async fn a_client_answering_pings_stays_connected_past_the_idle_timeout() {
    let app = spawn_app_with(&[
        ("RELAIS_WS_PING_INTERVAL_SECS", "0.3"),
        ("RELAIS_WS_IDLE_TIMEOUT_SECS", "1"),
    ])
    .await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    // Polling the stream answers the server's pings.
    let pinged = tokio::time::timeout(Duration::from_millis(2500), async {
        let mut pings = 0;
        while let Some(Ok(msg)) = ws.stream.next().await {
            if matches!(msg, Message::Ping(_)) {
                pings += 1;
            }
        }
        pings
    })
    .await;
    assert!(pinged.is_err(), "the connection stayed open");
    assert_eq!(ws.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn the_connection_limit_refuses_extra_upgrades_with_503() {
    let app = spawn_app_with(&[("RELAIS_MAX_CONNECTIONS", "2")]).await;
    let _a = app.ws().await;
    let _b = app.ws().await;
    match Ws::try_open(app.addr, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    assert!(app.metric("relais_connections_refused_total").await >= 1.0);
}

#[tokio::test]
async fn origins_outside_the_allowlist_are_refused() {
    let app = spawn_app_with(&[("RELAIS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    assert!(
        Ws::try_open(app.addr, Some("https://app.example.com"))
            .await
            .is_ok()
    );
    assert!(
        Ws::try_open(app.addr, None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    match Ws::try_open(app.addr, Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn the_rest_api_serves_cors_to_allowed_origins_only() {
    let app = spawn_app_with(&[("RELAIS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .send()
    };
    let res = preflight("https://app.example.com").await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let list = |name: &str| headers[name].to_str().unwrap().to_ascii_lowercase();
    assert!(list("access-control-allow-methods").contains("post"));
    for header in [
        "authorization",
        "content-type",
        "idempotency-key",
        "last-event-id",
    ] {
        assert!(
            list("access-control-allow-headers").contains(header),
            "{header}"
        );
    }
    assert_eq!(headers["access-control-max-age"], "600");
    assert!(headers.get("access-control-allow-credentials").is_none());

    let res = preflight("https://evil.example").await.unwrap();
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        res.headers()
    );

    // The actual request: the origin is echoed and the headers a client
    // reads are exposed; another origin gets no grant.
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://evil.example", false),
    ] {
        let res = app
            .http
            .post(app.url("/api/v1/auth/login"))
            .header("origin", origin)
            .json(&json!({"tenant": "default", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let headers = res.headers();
        assert_eq!(
            headers.get("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
        if allowed {
            let exposed = headers["access-control-expose-headers"]
                .to_str()
                .unwrap()
                .to_ascii_lowercase();
            assert!(exposed.contains("retry-after") && exposed.contains("idempotent-replayed"));
        }
    }
}

#[tokio::test]
async fn any_origin_gets_cors_with_a_star_allowlist() {
    let app = spawn_app_with(&[("RELAIS_ALLOWED_ORIGINS", "*")]).await;
    let res = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/inbox"))
        .header("origin", "https://anywhere.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://anywhere.example"
    );
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_to_reconnect_and_stops_accepting() {
    let mut app = spawn_app().await;
    let token = app.admin_token().await;
    let mut a = app.ws_connected(&token).await;
    let mut b = app.ws_connected(&token).await;
    b.subscribe("broadcast").await;
    // Opened but not yet authenticated: told too.
    let mut c = app.ws().await;
    let addr = app.addr;
    app.shutdown().await.expect("the server returns cleanly");
    assert_eq!(a.closed().await, Some(4007));
    assert_eq!(b.closed().await, Some(4007));
    assert_eq!(c.closed().await, Some(4007));
    assert!(
        Ws::try_open(addr, None).await.is_err(),
        "no new connections after shutdown"
    );
}

/// While live sockets drain, the node still answers HTTP: `/readyz` says 503
/// (a load balancer stops sending traffic) and upgrades get a JSON 503
/// `shutting_down`, not a refused TCP connection.
#[tokio::test]
async fn during_the_drain_readyz_and_upgrades_answer_503() {
    let mut app = spawn_app().await;
    let token = app.admin_token().await;
    // Never reads: the server waits for its close handshake, so the drain
    // lasts until the close-wait bound.
    let mut slow = app.ws_connected(&token).await;
    app.begin_shutdown();
    let deadline = tokio::time::Instant::now() + WAIT;
    let ready = loop {
        let res = app.get("/readyz", None).await;
        if res.status() == 503 {
            break res.json::<Value>().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never said 503"
        );
    };
    assert_eq!(
        (ready["ready"].clone(), ready["draining"].clone()),
        (json!(false), json!(true))
    );
    match Ws::try_open(app.addr, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "shutting_down");
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    assert_eq!(slow.closed().await, Some(4007));
    app.shutdown().await.expect("the server returns cleanly");
}

#[tokio::test]
async fn metrics_count_connections_subscriptions_and_deliveries() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let key = app.api_key(&["publish"]).await;
    let mut a = app.ws_connected(&token).await;
    let mut b = app.ws_connected(&token).await;
    a.subscribe("broadcast").await;
    b.subscribe("broadcast").await;
    app.publish(&key, "broadcast", json!(1)).await;
    a.publications(1).await;
    b.publications(1).await;
    assert_eq!(app.metric("relais_connections").await, 2.0);
    assert_eq!(app.metric("relais_subscriptions").await, 2.0);
    assert_eq!(app.metric("relais_publications_total").await, 1.0);
    assert_eq!(app.metric("relais_deliveries_total").await, 2.0);
    // One latency sample per written batch: each subscriber wrote one.
    assert_eq!(
        app.metric("relais_delivery_latency_seconds_count").await,
        2.0
    );
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["ready"], true);
}

#[tokio::test]
async fn a_close_started_by_the_client_is_answered_with_its_code() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    ws.stream
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000u16.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let reply = tokio::time::timeout(WAIT, ws.stream.next()).await.unwrap();
    match reply {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    // Also before authenticating.
    let mut ws = app.ws().await;
    ws.stream.close(None).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.stream.next()).await.unwrap();
    assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{reply:?}");
}

#[tokio::test]
async fn the_developer_console_is_served_with_a_same_origin_policy() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert!(
            res.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        assert!(!res.text().await.unwrap().is_empty());
    }
}
