//! The operator's view of the hub: nodes, connections and channels, for
//! tenant administrators, on one node and across a cluster on Redis.

use serde_json::Value;

use crate::helpers::*;

/// Nodes report every second here, so a cluster test does not wait long.
const REPORT_SECS: &str = "1";

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let res = app.get(path, Some(token)).await;
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

/// Asks `path` until `check` accepts the answer; panics after [`WAIT`]
/// with the last answer. Node reports travel on an interval, so what other
/// nodes say shows up after a moment.
async fn until(app: &TestApp, path: &str, token: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = get_json(app, path, token).await;
        if check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never satisfied the check; last answer: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn channel<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
}

#[tokio::test]
async fn a_tenant_admin_sees_this_node_its_connections_and_channels() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe("room:ops").await;
    ws.subscribe("room:quiet").await;
    let mut other = app.ws_connected(&token).await;
    other.subscribe("room:ops").await;

    let nodes = get_json(&app, "/api/v1/admin/nodes", &token).await;
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{nodes}");
    let node = &list[0];
    assert_eq!(node["local"], true);
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert!(!node["id"].as_str().unwrap().is_empty());
    assert!(node["started_at"].as_i64().unwrap() <= node["last_seen"].as_i64().unwrap());
    assert_eq!(node["connections"], 2);
    assert_eq!(node["subscriptions"], 3);
    assert_eq!(node["channels"], 2);
    assert_eq!(node["tenant"]["connections"], 2);
    assert_eq!(node["tenant"]["subscriptions"], 3);
    assert_eq!(node["tenant"]["channels"], 2);

    let channels = get_json(&app, "/api/v1/admin/channels", &token).await;
    let names: Vec<&str> = channels["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["room:ops", "room:quiet"],
        "busiest first: {channels}"
    );
    let ops = channel(&channels, "room:ops").unwrap();
    assert_eq!(ops["subscribers"], 2);
    assert_eq!(ops["nodes"], serde_json::json!([node["id"]]));
    assert_eq!(channels["truncated"], false);

    let limited = get_json(&app, "/api/v1/admin/channels?limit=1", &token).await;
    assert_eq!(limited["channels"].as_array().unwrap().len(), 1);
    assert_eq!(limited["truncated"], true);
    let filtered = get_json(&app, "/api/v1/admin/channels?prefix=room:q", &token).await;
    assert_eq!(filtered["channels"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["channels"][0]["name"], "room:quiet");

    // One more connection, over SSE: counted by transport.
    let _sse = crate::sse::open(&app, &token, "room:ops", None).await;
    let connections = until(&app, "/api/v1/admin/connections", &token, |c| {
        c["total"]["sse"] == 1
    })
    .await;
    assert_eq!(connections["total"]["connections"], 3, "{connections}");
    assert_eq!(connections["total"]["ws"], 2);
    assert_eq!(connections["nodes"][0]["id"], node["id"]);
    assert_eq!(connections["nodes"][0]["ws"], 2);

    // A connection that leaves is no longer counted.
    drop(other);
    until(&app, "/api/v1/admin/connections", &token, |c| {
        c["total"]["ws"] == 1
    })
    .await;
}

#[tokio::test]
async fn another_tenants_admin_sees_the_node_but_not_this_tenants_channels() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe("room:secret").await;
    let (_, outsider) = app.other_tenant_admin().await;

    let nodes = get_json(&app, "/api/v1/admin/nodes", &outsider).await;
    let node = &nodes["nodes"][0];
    assert_eq!(node["connections"], 1, "node totals are visible: {nodes}");
    assert_eq!(node["tenant"]["connections"], 0);
    assert_eq!(node["tenant"]["subscriptions"], 0);
    assert_eq!(node["tenant"]["channels"], 0);
    let channels = get_json(&app, "/api/v1/admin/channels", &outsider).await;
    assert_eq!(channels["channels"], serde_json::json!([]), "{channels}");
    let connections = get_json(&app, "/api/v1/admin/connections", &outsider).await;
    assert_eq!(connections["total"]["connections"], 0);

    // The first tenant's admin does see it.
    let mine = get_json(&app, "/api/v1/admin/channels", &token).await;
    assert_eq!(channel(&mine, "room:secret").unwrap()["subscribers"], 1);
}

#[tokio::test]
async fn members_are_refused_and_bad_queries_get_typed_errors() {
    let app = spawn_app().await;
    let (_, member) = app.user("ana@example.com", &["member"]).await;
    for path in [
        "/api/v1/admin/nodes",
        "/api/v1/admin/channels",
        "/api/v1/admin/connections",
    ] {
        let res = app.get(path, Some(&member)).await;
        assert_eq!(res.status(), 403, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
        assert_eq!(app.get(path, None).await.status(), 401, "{path}");
    }
    let admin = app.admin_token().await;
    for query in ["limit=0", "limit=501", "colour=red"] {
        let res = app
            .get(&format!("/api/v1/admin/channels?{query}"), Some(&admin))
            .await;
        assert_eq!(res.status(), 422, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    }
    let long = "x".repeat(201);
    let res = app
        .get(
            &format!("/api/v1/admin/channels?prefix={long}"),
            Some(&admin),
        )
        .await;
    assert_eq!(res.status(), 422);
}

#[tokio::test]
async fn every_node_of_a_cluster_is_listed_and_channels_sum_across_nodes() {
    let a = first_cluster_node_with(&[("RELAIS_NODE_REPORT_SECS", REPORT_SECS)]).await;
    let b = a.spawn_peer().await;
    let token = a.admin_token().await;
    let mut on_a = a.ws_connected(&token).await;
    on_a.subscribe("room:both").await;
    let mut on_b = b.ws_connected(&token).await;
    on_b.subscribe("room:both").await;
    on_b.subscribe("room:only-b").await;

    for node in [&a, &b] {
        let nodes = until(node, "/api/v1/admin/nodes", &token, |n| {
            n["nodes"].as_array().unwrap().len() == 2
                && n["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n["tenant"]["connections"] == 1)
        })
        .await;
        let list = nodes["nodes"].as_array().unwrap();
        let local: Vec<&Value> = list.iter().filter(|n| n["local"] == true).collect();
        assert_eq!(local.len(), 1, "{nodes}");
        let ids: Vec<&str> = list.iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_ne!(ids[0], ids[1]);

        let channels = until(node, "/api/v1/admin/channels", &token, |c| {
            channel(c, "room:both").is_some_and(|c| c["subscribers"] == 2)
                && channel(c, "room:only-b").is_some()
        })
        .await;
        let both = channel(&channels, "room:both").unwrap();
        assert_eq!(both["nodes"].as_array().unwrap().len(), 2, "{channels}");
        assert_eq!(channels["channels"][0]["name"], "room:both");
        assert_eq!(channel(&channels, "room:only-b").unwrap()["subscribers"], 1);

        let connections = until(node, "/api/v1/admin/connections", &token, |c| {
            c["total"]["connections"] == 2
        })
        .await;
        assert_eq!(connections["nodes"].as_array().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_operator_endpoints() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    for path in [
        "/api/v1/admin/nodes",
        "/api/v1/admin/connections",
        "/api/v1/admin/channels",
    ] {
        let op = &doc["paths"][path]["get"];
        for status in ["200", "401", "403", "503"] {
            assert!(op["responses"].get(status).is_some(), "{path} {status}");
        }
    }
    let limit = doc["paths"]["/api/v1/admin/channels"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 500);
}
