//! The publish API: offsets, batches, authorisation and idempotency.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn publish_returns_the_offset_and_epoch_and_subscribers_receive_it() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let key = app.api_key(&["publish"]).await;
    let mut ws = app.ws_connected(&token).await;
    let sub = ws.subscribe("broadcast").await;
    let first = app.publish(&key, "broadcast", json!({"a": 1})).await;
    let second = app.publish(&key, "broadcast", json!({"a": 2})).await;
    assert_eq!(
        (first["offset"].as_u64(), second["offset"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(first["epoch"], sub["epoch"]);
    let got = ws.publications(2).await;
    assert_eq!(got[0]["data"], json!({"a": 1}));
    assert_eq!(got[1]["channel"], "broadcast");
}

#[tokio::test]
async fn batch_publish_is_ordered_and_all_or_nothing_on_bad_items() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let key = app.api_key(&["publish"]).await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe("broadcast").await;
    let res = app
        .post(
            "/api/v1/publish/batch",
            Some(&key),
            json!({"publications": [
                {"channel": "broadcast", "data": 1},
                {"channel": "nope", "data": 2},
            ]}),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(
        res.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("publications[1]")
    );
    let res = app
        .post(
            "/api/v1/publish/batch",
            Some(&key),
            json!({"publications": [
                {"channel": "broadcast", "data": 1},
                {"channel": "broadcast", "data": 2},
                {"channel": "role:admin", "data": 3},
            ]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let offsets: Vec<_> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![1, 2, 1]);
    let got = ws.publications(2).await;
    assert_eq!(
        (got[0]["data"].as_u64(), got[1]["data"].as_u64()),
        (Some(1), Some(2)),
        "nothing from the refused batch"
    );
    let res = app
        .post(
            "/api/v1/publish/batch",
            Some(&key),
            json!({"publications": []}),
        )
        .await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_batch"
    );
}

#[tokio::test]
async fn publishing_needs_the_publish_scope_or_permission() {
    let app = spawn_app().await;
    let notify_only = app.api_key(&["notify"]).await;
    let res = app
        .post(
            "/api/v1/publish",
            Some(&notify_only),
            json!({"channel": "broadcast", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 403);
    let (_, member) = app.user("ana@example.com", &["member"]).await;
    let res = app
        .post(
            "/api/v1/publish",
            Some(&member),
            json!({"channel": "broadcast", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 403);
    // A member may publish where the namespace lets clients publish.
    let res = app
        .post(
            "/api/v1/publish",
            Some(&member),
            json!({"channel": "room:a", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let admin = app.admin_token().await;
    let res = app
        .post(
            "/api/v1/publish",
            Some(&admin),
            json!({"channel": "broadcast", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_retried_publish_with_the_same_idempotency_key_publishes_once() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let key = app.api_key(&["publish"]).await;
    let mut ws = app.ws_connected(&token).await;
    ws.subscribe("broadcast").await;
    let send = |body: Value, idem: &'static str| {
        app.http
            .post(app.url("/api/v1/publish"))
            .bearer_auth(&key)
            .header("idempotency-key", idem)
            .json(&body)
            .send()
    };
    let body = json!({"channel": "broadcast", "data": {"order": 42}});
    let first = send(body.clone(), "order-42").await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let retry = send(body.clone(), "order-42").await.unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    // Same key, different request: refused.
    let other = send(
        json!({"channel": "broadcast", "data": {"order": 43}}),
        "order-42",
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(
        other.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_key_reused"
    );
    // Exactly one publication reached the subscriber.
    app.publish(&key, "broadcast", json!("marker")).await;
    let got = ws.publications(2).await;
    assert_eq!(got[0]["data"]["order"], 42);
    assert_eq!(got[1]["data"], "marker");
    assert_eq!(got[1]["offset"], 2);
}

#[tokio::test]
async fn idempotency_keys_are_per_tenant_and_a_failed_request_can_be_retried() {
    let app = spawn_app().await;
    let key = app.api_key(&["publish"]).await;
    let send = |body: Value| {
        app.http
            .post(app.url("/api/v1/publish"))
            .bearer_auth(&key)
            .header("idempotency-key", "k1")
            .json(&body)
            .send()
    };
    // A failure releases the key…
    let res = send(json!({"channel": "nope", "data": 1})).await.unwrap();
    assert_eq!(res.status(), 422);
    // …so the corrected request goes through under the same key (different body is fine: nothing was stored).
    let res = send(json!({"channel": "broadcast", "data": 1}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .http
        .post(app.url("/api/v1/publish"))
        .bearer_auth(&key)
        .header("idempotency-key", "")
        .json(&json!({"channel": "broadcast", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_idempotency_key"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/me",
        "/api/v1/admin/roles",
        "/api/v1/admin/users",
        "/api/v1/admin/users/{id}",
        "/api/v1/admin/users/{id}/revoke-sessions",
        "/api/v1/admin/api-keys",
        "/api/v1/admin/api-keys/{id}",
        "/api/v1/publish",
        "/api/v1/publish/batch",
        "/api/v1/notification-types",
        "/api/v1/notification-types/{key}",
        "/api/v1/notifications",
        "/api/v1/notifications/{id}",
        "/api/v1/inbox",
        "/api/v1/inbox/counts",
        "/api/v1/inbox/batch",
        "/api/v1/inbox/read-all",
        "/api/v1/inbox/seen-all",
        "/api/v1/inbox/{id}",
        "/api/v1/inbox/{id}/{action}",
        "/api/v1/me/preferences",
        "/api/v1/unsubscribe/{token}",
        "/api/v1/queues",
        "/api/v1/queues/{queue}",
        "/api/v1/queues/{queue}/items",
        "/api/v1/queues/{queue}/items/{id}",
        "/api/v1/queues/{queue}/items/{id}/transition",
        "/api/v1/queues/{queue}/items/{id}/events",
        "/api/v1/queues/{queue}/transitions",
        "/api/v1/chat/rooms",
        "/api/v1/chat/rooms/{room}",
        "/api/v1/chat/rooms/{room}/join",
        "/api/v1/chat/rooms/{room}/leave",
        "/api/v1/chat/rooms/{room}/invite",
        "/api/v1/chat/rooms/{room}/mutes",
        "/api/v1/chat/rooms/{room}/read",
        "/api/v1/chat/rooms/{room}/messages",
        "/api/v1/chat/rooms/{room}/messages/{message}",
        "/api/v1/chat/settings",
        "/api/v1/assistant/providers",
        "/api/v1/assistant/providers/{id}",
        "/api/v1/assistant/assistants",
        "/api/v1/assistant/conversations",
        "/api/v1/assistant/conversations/{id}/messages",
        "/api/v1/assistant/conversations/{id}/export",
        "/api/v1/assistant/runs/{id}/cancel",
        "/api/v1/assistant/settings",
        "/api/v1/assistant/analytics",
        "/api/v1/admin/emails",
        "/api/v1/admin/emails/{id}",
        "/api/v1/admin/emails/{id}/retry",
        "/api/v1/projects",
        "/api/v1/projects/{id}",
        "/api/v1/projects/{id}/members/{user}",
        "/api/v1/projects/{id}/events",
        "/api/v1/sse",
        "/ws",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn metrics_show_http_and_publish_latency() {
    let app = spawn_app().await;
    let key = app.api_key(&["publish"]).await;
    app.publish(&key, "broadcast", json!(1)).await;
    app.publish(&key, "broadcast", json!(2)).await;
    app.get("/api/v1/nothing-here", None).await;
    let text = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        text.contains("# TYPE relais_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("# TYPE relais_publish_duration_seconds histogram"));
    assert_eq!(
        app.metric(r#"relais_http_request_duration_seconds_count{method="POST",route="/api/v1/publish",status="2xx"}"#)
            .await,
        2.0
    );
    assert_eq!(
        app.metric(r#"relais_http_request_duration_seconds_count{method="GET",route="unmatched",status="4xx"}"#)
            .await,
        1.0
    );
    for le in ["0.0005", "2.5", "+Inf"] {
        let bucket = format!(
            r#"relais_http_request_duration_seconds_bucket{{le="{le}",method="POST",route="/api/v1/publish",status="2xx"}}"#
        );
        assert!(text.contains(&bucket), "{bucket} in {text}");
    }
    assert_eq!(
        app.metric("relais_publish_duration_seconds_count").await,
        2.0
    );
}

#[tokio::test]
async fn projects_are_listed_in_pages() {
    let app = spawn_app().await;
    let key = app.api_key(&["projects"]).await;
    let (ana, ana_token) = app.user("ana@example.com", &["member"]).await;
    let mut ids = Vec::new();
    let mut anas = Vec::new();
    for i in 0..5 {
        let members = if i % 2 == 0 {
            json!([{"user_id": ana}])
        } else {
            json!([])
        };
        let res = app
            .post(
                "/api/v1/projects",
                Some(&key),
                json!({"name": format!("p{i}"), "members": members}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let id = res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        if i % 2 == 0 {
            anas.push(id.clone());
        }
        ids.push(id);
    }
    ids.sort();
    anas.sort();
    let page = |query: String, bearer: String| {
        let app = &app;
        async move {
            let res = app
                .get(&format!("/api/v1/projects{query}"), Some(&bearer))
                .await;
            assert_eq!(res.status(), 200, "{query}");
            res.json::<Value>().await.unwrap()
        }
    };
    let listed = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Every project, two at a time, by id.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let p = page(query.clone(), key.clone()).await;
        let items = listed(&p);
        assert!(items.len() <= 2);
        seen.extend(items);
        match p["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // One page when it holds everything.
    let all = page(String::new(), key.clone()).await;
    assert_eq!(listed(&all), ids);
    assert!(all["next_cursor"].is_null());
    // A member sees their projects only, paged the same way.
    let first = page("?limit=1".into(), ana_token.clone()).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let rest = page(format!("?cursor={cursor}"), ana_token.clone()).await;
    let mut member_seen = listed(&first);
    member_seen.extend(listed(&rest));
    assert_eq!(member_seen, anas);
    // Unknown query parameters are refused.
    let res = app.get("/api/v1/projects?page=2", Some(&key)).await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_query"
    );
}
