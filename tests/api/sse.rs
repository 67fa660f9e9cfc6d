//! The read-only SSE endpoint: same authorisation, live delivery, and
//! `Last-Event-ID` recovery.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// Reads SSE events (`event`, `id`, `data`) from a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

impl SseReader {
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return SseEvent {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an SSE chunk")
                .unwrap()
                .expect("stream open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn open(
    app: &TestApp,
    token: &str,
    channels: &str,
    last_event_id: Option<&str>,
) -> SseReader {
    let mut req = app
        .http
        .get(app.url(&format!("/api/v1/sse?channels={channels}")))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let response = req.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    SseReader {
        response,
        buffer: String::new(),
    }
}

#[tokio::test]
async fn sse_delivers_publications_and_resumes_from_last_event_id() {
    let app = spawn_app().await;
    let (ana, token) = app.user("ana@example.com", &["member"]).await;
    let key = app.api_key(&["publish"]).await;
    let channels = format!("broadcast,user:{ana}");
    let mut sse = open(&app, &token, &channels, None).await;
    assert_eq!(sse.next().await.event, "subscribed");
    assert_eq!(sse.next().await.event, "subscribed");
    app.publish(&key, "broadcast", json!({"n": 1})).await;
    app.publish(&key, &format!("user:{ana}"), json!({"n": 2}))
        .await;
    let first = sse.next().await;
    assert_eq!(
        (first.event.as_str(), first.data["data"]["n"].as_u64()),
        ("pub", Some(1))
    );
    let second = sse.next().await;
    assert_eq!(second.data["channel"], format!("user:{ana}"));
    let last_id = second.id.unwrap();
    drop(sse);

    app.publish(&key, "broadcast", json!({"n": 3})).await;
    app.publish(&key, &format!("user:{ana}"), json!({"n": 4}))
        .await;
    let mut sse = open(&app, &token, &channels, Some(&last_id)).await;
    let mut recovered = Vec::new();
    let mut subscribed = 0;
    while recovered.len() < 2 {
        let e = sse.next().await;
        match e.event.as_str() {
            "subscribed" => {
                assert_eq!(e.data["recovered"], true);
                subscribed += 1;
            }
            "pub" => recovered.push(e.data["data"]["n"].as_u64().unwrap()),
            other => panic!("unexpected event {other}"),
        }
    }
    recovered.sort();
    assert_eq!((subscribed, recovered), (2, vec![3, 4]));
}

#[tokio::test]
async fn sse_applies_channel_policies_and_authentication() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let res = app
        .http
        .get(app.url("/api/v1/sse?channels=role:admin"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = app
        .http
        .get(app.url("/api/v1/sse?channels=broadcast"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .http
        .get(app.url("/api/v1/sse?channels=nope"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "channel_not_found"
    );
}

#[tokio::test]
async fn sse_streams_end_with_a_close_event_when_the_session_is_revoked() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let mut sse = open(&app, &token, "broadcast", None).await;
    sse.next().await;
    app.post("/api/v1/auth/logout", Some(&token), json!({}))
        .await;
    let close = tokio::time::timeout(Duration::from_secs(5), sse.next())
        .await
        .unwrap();
    assert_eq!(
        (close.event.as_str(), close.data["code"].as_u64()),
        ("close", Some(4003))
    );
}
