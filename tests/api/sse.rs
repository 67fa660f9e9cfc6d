//! The read-only SSE endpoint: same authorisation, live delivery, and
//! `Last-Event-ID` recovery.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// Reads SSE events (`event`, `id`, `data`) from a streaming response.
pub(crate) struct SseReader {
    pub(crate) response: reqwest::Response,
    pub(crate) buffer: String,
}

#[derive(Debug)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: Value,
}

impl SseReader {
    pub(crate) async fn next(&mut self) -> SseEvent {
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

pub(crate) async fn open(
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

/// A browser may drop at any event of a replay and resume from its id: every
/// id, `subscribed` events included, must carry every channel's position.
#[tokio::test]
async fn sse_ids_during_a_replay_carry_every_channel_and_resume_from_any_of_them() {
    let app = spawn_app().await;
    let (ana, token) = app.user("ana@example.com", &["member"]).await;
    let key = app.api_key(&["publish"]).await;
    let mine = format!("user:{ana}");
    let channels = format!("broadcast,{mine}");
    let mut sse = open(&app, &token, &channels, None).await;
    let subscribed = sse.next().await;
    assert_eq!(subscribed.event, "subscribed");
    assert!(subscribed.id.is_some(), "subscribed events carry an id");
    assert!(
        subscribed.data.get("recovered").is_none(),
        "a fresh stream recovers nothing"
    );
    assert_eq!(sse.next().await.event, "subscribed");
    app.publish(&key, "broadcast", json!({"n": 1})).await;
    app.publish(&key, &mine, json!({"n": 2})).await;
    sse.next().await;
    let resume_at = sse.next().await.id.unwrap();
    drop(sse);

    // Missed on both channels while away.
    app.publish(&key, "broadcast", json!({"n": 3})).await;
    app.publish(&key, &mine, json!({"n": 4})).await;
    let mut sse = open(&app, &token, &channels, Some(&resume_at)).await;
    let mut ids = Vec::new();
    let mut replayed = Vec::new();
    while replayed.len() < 2 {
        let e = sse.next().await;
        let id = e.id.clone().expect("every event has an id");
        assert!(
            id.contains("broadcast@") && id.contains(&format!("{mine}@")),
            "{} event id {id} leaves a channel out",
            e.event
        );
        if e.event == "subscribed" {
            assert_eq!(e.data["recovered"], true);
        } else {
            replayed.push(e.data["data"]["n"].as_u64().unwrap());
        }
        ids.push(id);
    }
    replayed.sort();
    assert_eq!(replayed, vec![3, 4]);
    drop(sse);

    // Drop right after the first replayed publication: resuming from its id
    // still recovers what the other channel had not replayed yet.
    let first_replay = &ids[2];
    let mut sse = open(&app, &token, &channels, Some(first_replay)).await;
    let mut again = Vec::new();
    while again.is_empty() {
        let e = sse.next().await;
        if e.event == "subscribed" {
            assert_eq!(e.data["recovered"], true, "{:?}", e.data);
        } else {
            again.push(e.data["data"]["n"].as_u64().unwrap());
        }
    }
    assert_eq!(again, vec![4]);

    // An id that names one channel only: the other is told it was not
    // recovered (false, never null).
    let only_broadcast: String = resume_at
        .split(';')
        .filter(|p| p.starts_with("broadcast@"))
        .collect();
    let mut sse = open(&app, &token, &channels, Some(&only_broadcast)).await;
    let mut seen = 0;
    while seen < 2 {
        let e = sse.next().await;
        if e.event == "subscribed" {
            let expected = e.data["channel"] == "broadcast";
            assert_eq!(e.data["recovered"], expected, "{:?}", e.data);
            seen += 1;
        }
    }
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
