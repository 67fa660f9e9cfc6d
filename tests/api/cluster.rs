//! Cluster mode: several nodes (separate servers on loopback ports) sharing
//! the store and a real Redis. Redis comes from `RELAIS_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`); each test uses its own key prefix.

use serde_json::{Value, json};

use crate::helpers::*;

fn redis_url() -> String {
    std::env::var("RELAIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Node A of a fresh cluster; `a.spawn_peer()` adds nodes.
async fn first_node() -> TestApp {
    let prefix = format!("relais-test-{}", uuid::Uuid::new_v4().simple());
    let url = redis_url();
    spawn_app_with(&[
        ("REDIS_URL", url.as_str()),
        ("RELAIS_REDIS_PREFIX", prefix.as_str()),
        (
            "RELAIS_JWT_SECRET",
            "a-cluster-wide-secret-for-the-tests-0123456789",
        ),
    ])
    .await
}

#[tokio::test]
async fn a_publication_on_one_node_reaches_subscribers_on_another() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut on_b = b.ws_connected(&token).await;
    let sub = on_b.subscribe("broadcast").await;
    let published = a.publish(&key, "broadcast", json!({"from": "a"})).await;
    let got = on_b.publications(1).await;
    assert_eq!(got[0]["data"]["from"], "a");
    assert_eq!(got[0]["offset"], published["offset"]);
    assert_eq!(published["epoch"], sub["epoch"]);
    let ready: Value = b.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["bus"], true);
}

/// 40 publications sent at once through `node`.
async fn burst(node: &TestApp, key: &str, tag: &str) -> Vec<reqwest::Response> {
    let requests = (0..40).map(|n| {
        node.post(
            "/api/v1/publish",
            Some(key),
            json!({"channel": "broadcast", "data": format!("{tag}{n}")}),
        )
    });
    futures_util::future::join_all(requests).await
}

#[tokio::test]
async fn two_nodes_publishing_concurrently_produce_one_order_everywhere() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut on_a = a.ws_connected(&token).await;
    let mut on_b = b.ws_connected(&token).await;
    on_a.subscribe("broadcast").await;
    on_b.subscribe("broadcast").await;
    let (ra, rb) = tokio::join!(burst(&a, &key, "a"), burst(&b, &key, "b"));
    assert!(ra.iter().chain(rb.iter()).all(|r| r.status() == 200));
    let seen_a = on_a.publications(80).await;
    let seen_b = on_b.publications(80).await;
    let offsets: Vec<u64> = seen_a
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=80).collect::<Vec<_>>(), "one gap-free order");
    let data = |seen: &[Value]| seen.iter().map(|p| p["data"].clone()).collect::<Vec<_>>();
    assert_eq!(data(&seen_a), data(&seen_b), "the same order on both nodes");
}

#[tokio::test]
async fn a_client_losing_its_node_recovers_everything_on_another() {
    let mut a = first_node().await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let mut ws = a.ws_connected(&token).await;
    ws.subscribe("broadcast").await;
    for n in 1..=3 {
        b.publish(&key, "broadcast", json!(n)).await;
    }
    let seen = ws.publications(3).await;
    let last = seen.last().unwrap().clone();
    a.shutdown().await.unwrap();
    assert_eq!(ws.closed().await, Some(4007));
    for n in 4..=6 {
        b.publish(&key, "broadcast", json!(n)).await;
    }
    let mut ws = b.ws_connected(&token).await;
    let reply = ws
        .request(json!({"type": "subscribe", "channel": "broadcast", "recover": {"epoch": last["epoch"], "offset": last["offset"]}}))
        .await;
    assert_eq!(reply["recovered"], true);
    let missed = ws.publications(3).await;
    assert_eq!(
        missed
            .iter()
            .map(|p| p["data"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
}

#[tokio::test]
async fn a_revocation_on_one_node_closes_sockets_on_every_node() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let (_, token) = a.user("ana@example.com", &["member"]).await;
    let mut on_a = a.ws_connected(&token).await;
    let mut on_b = b.ws_connected(&token).await;
    let res = a.post("/api/v1/auth/logout", Some(&token), json!({})).await;
    assert_eq!(res.status(), 204);
    assert_eq!(on_a.closed().await, Some(4003));
    assert_eq!(on_b.closed().await, Some(4003));
}

#[tokio::test]
async fn presence_and_join_events_span_nodes() {
    let a = first_node().await;
    let b = a.spawn_peer().await;
    let (ana, ana_token) = a.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = a.user("bo@example.com", &["member"]).await;
    let mut on_a = a.ws_connected(&ana_token).await;
    on_a.subscribe("room:lobby").await;
    assert_eq!(on_a.recv().await["user"], ana.as_str(), "own join");
    let mut on_b = b.ws_connected(&bo_token).await;
    on_b.subscribe("room:lobby").await;
    let join = on_a.recv().await;
    assert_eq!(
        (join["type"].as_str(), join["user"].as_str()),
        (Some("join"), Some(bo.as_str()))
    );
    let presence = on_a
        .request(json!({"type": "presence", "channel": "room:lobby"}))
        .await;
    assert_eq!(presence["users"], 2, "{presence}");
    assert_eq!(presence["clients"], 2);
    drop(on_b);
    let leave = on_a.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["user"].as_str()),
        (Some("leave"), Some(bo.as_str()))
    );
    let presence = on_a
        .request(json!({"type": "presence", "channel": "room:lobby"}))
        .await;
    assert_eq!(presence["users"], 1);
}
