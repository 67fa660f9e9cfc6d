//! Notification types, triggers, inboxes, counters, live events, projects
//! and preferences, over the real REST API and WebSocket.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT, Ws, spawn_app, spawn_app_with};

/// Triggers with `key` and returns the accepted trigger.
pub async fn trigger(app: &TestApp, key: &str, body: Value) -> Value {
    let res = app
        .post("/api/v1/notifications", Some(key), body.clone())
        .await;
    let status = res.status();
    let value: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "trigger {body}: {value}");
    value
}

/// Waits until the trigger's fan-out is done.
pub async fn done(app: &TestApp, key: &str, trigger: &Value) -> Value {
    let id = trigger["id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view: Value = app
            .get(&format!("/api/v1/notifications/{id}"), Some(key))
            .await
            .json()
            .await
            .unwrap();
        if view["status"] == "done" {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trigger not done: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn inbox(app: &TestApp, token: &str, query: &str) -> Value {
    let res = app.get(&format!("/api/v1/inbox{query}"), Some(token)).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Applies an inbox action to one item; returns the response body.
async fn act(app: &TestApp, token: &str, id: i64, action: &str) -> Value {
    app.post(
        &format!("/api/v1/inbox/{id}/{action}"),
        Some(token),
        json!({}),
    )
    .await
    .json()
    .await
    .unwrap()
}

pub async fn counts(app: &TestApp, token: &str) -> Value {
    app.get("/api/v1/inbox/counts", Some(token))
        .await
        .json()
        .await
        .unwrap()
}

fn task_assigned(users: &[&str], title: &str) -> Value {
    json!({
        "type": "task.assigned",
        "payload": {"task": {"id": "t1", "title": title, "due_date": "2026-12-01"}, "project": {"id": "p1", "name": "Lancement"}, "actor": {"name": "Awa"}},
        "recipients": {"users": users},
    })
}

/// The payload the built-in `system.announcement` needs.
fn announcement(recipients: Value) -> Value {
    json!({
        "type": "system.announcement",
        "payload": {"announcement": {"title": "Maintenance", "body": "Ce soir"}},
        "recipients": recipients,
    })
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
async fn builtin_types_are_listed_and_tenants_add_override_and_restore_them() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let types: Vec<Value> = app
        .get("/api/v1/notification-types", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert!(types.len() >= 30, "{} types", types.len());
    assert!(
        types
            .iter()
            .any(|t| t["key"] == "campaign.approved" && t["builtin"] == true)
    );

    // An unknown placeholder is refused when the type is created.
    let bad = json!({
        "key": "invoice.paid", "category": "billing", "priority": "normal", "channels": ["in_app", "email"],
        "variables": ["invoice.number"],
        "templates": {"en": {"title": "Invoice {{ invoice.number }} paid", "body": "Amount {{ invoice.amount }}"}}
    });
    let res = app
        .post("/api/v1/notification-types", Some(&admin), bad)
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_type");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invoice.amount"),
        "{body}"
    );

    let good = json!({
        "key": "invoice.paid", "category": "billing", "priority": "high", "channels": ["in_app"],
        "variables": ["invoice.number"],
        "templates": {
            "en": {"title": "Invoice {{ invoice.number }} paid", "body": "Thanks {{ recipient.name }}"},
            "fr": {"title": "Facture {{ invoice.number }} payée", "body": "Merci {{ recipient.name }}"}
        }
    });
    let res = app
        .post("/api/v1/notification-types", Some(&admin), good.clone())
        .await;
    assert_eq!(res.status(), 201);
    let res = app
        .post("/api/v1/notification-types", Some(&admin), good)
        .await;
    assert_eq!(error_code(res).await, (409, "type_exists".into()));

    // Override a built-in, then restore it by deleting the override.
    let mut over: Value = app
        .get("/api/v1/notification-types/campaign.approved", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    over["priority"] = json!("critical");
    let res = app
        .http
        .put(app.url("/api/v1/notification-types/campaign.approved"))
        .bearer_auth(&admin)
        .json(&over)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let now: Value = app
        .get("/api/v1/notification-types/campaign.approved", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["priority"], "critical");
    assert_eq!(now["builtin"], false);
    let res = app
        .http
        .delete(app.url("/api/v1/notification-types/campaign.approved"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let restored: Value = app
        .get("/api/v1/notification-types/campaign.approved", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(restored["builtin"], true);

    // Members may read types but not change them.
    let (_, member) = app.user("member@example.com", &["member"]).await;
    let res = app
        .post(
            "/api/v1/notification-types",
            Some(&member),
            json!({"key": "x.y", "category": "c", "priority": "low", "channels": ["in_app"], "variables": [], "templates": {"en": {"title": "t", "body": "b"}}}),
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn bad_triggers_are_refused_with_precise_codes_and_create_nothing() {
    let app = spawn_app().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, alice_token) = app.user("alice@example.com", &["member"]).await;

    let cases = [
        (
            json!({"type": "no.such", "payload": {}, "recipients": {"users": [alice]}}),
            422,
            "unknown_type",
        ),
        (
            json!({"type": "task.assigned", "payload": {"task": {"id": "1"}}, "recipients": {"users": [alice]}}),
            422,
            "payload_incomplete",
        ),
        (task_assigned(&[], "x"), 422, "no_recipients"),
        (
            task_assigned(&["not-a-user"], "x"),
            422,
            "unknown_recipients",
        ),
        (
            announcement(json!({"roles": ["wizard"]})),
            422,
            "unknown_role",
        ),
        (
            announcement(json!({"projects": ["nope"]})),
            422,
            "unknown_project",
        ),
        (
            announcement(json!({"roles": ["broadcaster"]})),
            422,
            "no_recipients",
        ),
        (
            json!({"type": "task.assigned", "payload": [], "recipients": {"users": [alice]}}),
            422,
            "invalid_payload",
        ),
    ];
    for (body, status, code) in cases {
        let res = app
            .post("/api/v1/notifications", Some(&key), body.clone())
            .await;
        assert_eq!(error_code(res).await, (status, code.to_owned()), "{body}");
    }
    // A malformed body is a 400, a member's token a 403, a publish-only key a 403.
    let res = app
        .http
        .post(app.url("/api/v1/notifications"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .post(
            "/api/v1/notifications",
            Some(&alice_token),
            task_assigned(&[&alice], "x"),
        )
        .await;
    assert_eq!(res.status(), 403);
    let publish_only = app.api_key(&["publish"]).await;
    let res = app
        .post(
            "/api/v1/notifications",
            Some(&publish_only),
            task_assigned(&[&alice], "x"),
        )
        .await;
    assert_eq!(res.status(), 403);

    assert_eq!(counts(&app, &alice_token).await["unread"], 0);
    assert!(
        inbox(&app, &alice_token, "").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_retried_trigger_creates_nothing_twice() {
    let app = spawn_app().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, token) = app.user("alice@example.com", &["member"]).await;
    let body = task_assigned(&[&alice], "Maquette");
    let send = |body: Value| {
        app.http
            .post(app.url("/api/v1/notifications"))
            .bearer_auth(&key)
            .header("idempotency-key", "order-42-assigned")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    done(&app, &key, &first).await;
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], "done");

    let mut other = body;
    other["payload"]["task"]["title"] = json!("Autre");
    let res = send(other).await.unwrap();
    assert_eq!(
        error_code(res).await,
        (422, "idempotency_key_reused".into())
    );

    assert_eq!(
        inbox(&app, &token, "").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(counts(&app, &token).await["unread"], 1);
}

/// Every item of the inbox list for `query`, page after page, checking that
/// ids come newest first with no repeat.
async fn all_pages(app: &TestApp, token: &str, query: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?{query}&cursor={c}"),
            None => format!("?{query}"),
        };
        let page = inbox(app, token, &q).await;
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{query}: {ids:?}");
    ids
}

#[tokio::test]
async fn inbox_pages_filters_counts_and_actions() {
    let app = spawn_app().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, token) = app.user("alice@example.com", &["member"]).await;
    for i in 0..15 {
        done(
            &app,
            &key,
            &trigger(&app, &key, task_assigned(&[&alice], &format!("Tâche {i}"))).await,
        )
        .await;
    }
    for _ in 0..10 {
        done(
            &app,
            &key,
            &trigger(&app, &key, announcement(json!({"users": [alice]}))).await,
        )
        .await;
    }
    // Pages of 10, newest first, no duplicate, no gap.
    let seen = all_pages(&app, &token, "limit=10").await;
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    let newest = inbox(&app, &token, "?limit=1").await;
    assert_eq!(newest["items"][0]["type"], "system.announcement");
    assert_eq!(newest["items"][0]["status"], "unread");

    let c = counts(&app, &token).await;
    assert_eq!(c["unread"], 25);
    assert_eq!(c["unseen"], 25);
    assert_eq!(c["categories"]["tasks"]["unread"], 15);
    assert_eq!(c["categories"]["system"]["unread"], 10);

    let tasks = inbox(&app, &token, "?category=tasks&limit=100").await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), 15);
    let task_ids: Vec<i64> = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert!(
        tasks["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["category"] == "tasks")
    );
    let res = app.get("/api/v1/inbox?status=maybe", Some(&token)).await;
    assert_eq!(error_code(res).await, (422, "invalid_filter".into()));
    let res = app.get("/api/v1/inbox?cursor=zzz", Some(&token)).await;
    assert_eq!(error_code(res).await, (422, "invalid_cursor".into()));

    // Read one, unread it, archive another; then mark all tasks read.
    let first = seen[0];
    let res = act(&app, &token, first, "read").await;
    assert_eq!(res["counts"]["unread"], 24);
    assert_eq!(res["counts"]["read"], 1);
    assert_eq!(res["counts"]["unseen"], 24);
    let item: Value = app
        .get(&format!("/api/v1/inbox/{first}"), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["status"], "read");
    assert!(item["read_at"].is_i64());
    let res = act(&app, &token, first, "unread").await;
    assert_eq!(res["counts"]["unread"], 25);
    let second = seen[1];
    let res = act(&app, &token, second, "archive").await;
    assert_eq!(res["counts"]["archived"], 1);
    assert_eq!(res["counts"]["unread"], 24);
    let archived = inbox(&app, &token, "?status=archived").await;
    assert_eq!(archived["items"][0]["id"], second);
    assert_eq!(
        inbox(&app, &token, "?limit=100").await["items"]
            .as_array()
            .unwrap()
            .len(),
        24
    );

    let res: Value = app
        .post(
            "/api/v1/inbox/read-all",
            Some(&token),
            json!({"category": "tasks"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["counts"]["categories"]["tasks"]["unread"], 0);
    assert_eq!(res["counts"]["categories"]["system"]["unread"], 9);
    assert_eq!(res["counts"]["unread"], 9);
    let res: Value = app
        .post("/api/v1/inbox/seen-all", Some(&token), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["counts"]["unseen"], 0);
    assert_eq!(res["counts"]["unread"], 9);
    // Counters agree with the rows they count.
    assert_eq!(
        inbox(&app, &token, "?status=unread&limit=100").await["items"]
            .as_array()
            .unwrap()
            .len(),
        9
    );
    assert_eq!(
        inbox(&app, &token, "?status=read&limit=100").await["items"]
            .as_array()
            .unwrap()
            .len(),
        15
    );

    // The default list merges the unread and the read items by id: with
    // every other item read, each page straddles both, with and without a
    // category filter, and the archived one stays out.
    let active: Vec<i64> = seen.iter().copied().filter(|id| *id != second).collect();
    let alternate: Vec<i64> = active.iter().copied().step_by(2).collect();
    let res: Value = app
        .post(
            "/api/v1/inbox/batch",
            Some(&token),
            json!({"action": "read", "ids": alternate}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(res["counts"]["unread"].as_i64().unwrap() < 9);
    assert_eq!(all_pages(&app, &token, "limit=4").await, active);
    // The tasks are all read by now; the announcements alternate.
    let active_system: Vec<i64> = active
        .iter()
        .copied()
        .filter(|id| !task_ids.contains(id))
        .collect();
    assert_eq!(
        all_pages(&app, &token, "limit=3&category=system").await,
        active_system
    );
    let unread = all_pages(&app, &token, "limit=100&status=unread").await;
    assert!(!unread.is_empty() && unread.len() < active.len());

    let res = app
        .post(
            "/api/v1/inbox/batch",
            Some(&token),
            json!({"action": "explode", "ids": [first]}),
        )
        .await;
    assert_eq!(error_code(res).await, (422, "invalid_action".into()));
    let res: Value = app
        .post(
            "/api/v1/inbox/batch",
            Some(&token),
            json!({"action": "read", "ids": seen}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["counts"]["unread"], 0);
}

#[tokio::test]
async fn users_see_and_change_only_their_own_inbox_even_across_tenants() {
    let app = spawn_app().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, alice_token) = app.user("alice@example.com", &["member"]).await;
    let (_bob, bob_token) = app.user("bob@example.com", &["member"]).await;
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&alice], "Privé")).await,
    )
    .await;
    let id = inbox(&app, &alice_token, "").await["items"][0]["id"]
        .as_i64()
        .unwrap();

    assert!(
        inbox(&app, &bob_token, "").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.get(&format!("/api/v1/inbox/{id}"), Some(&bob_token))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.post(
            &format!("/api/v1/inbox/{id}/read"),
            Some(&bob_token),
            json!({})
        )
        .await
        .status(),
        404
    );
    let res: Value = app
        .post(
            "/api/v1/inbox/batch",
            Some(&bob_token),
            json!({"action": "archive", "ids": [id]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["changed"], json!([]));
    assert_eq!(counts(&app, &alice_token).await["unread"], 1);

    // Another tenant's key cannot reach this tenant's users.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["tenant", "create", "other", "--name", "Other"])
        .envs(app.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
        .args([
            "api-key", "create", "--tenant", "other", "--name", "k", "--scopes", "notify",
        ])
        .envs(app.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let other_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key (shown once): "))
        .unwrap_or_else(|| panic!("a key in: {stdout}"))
        .trim()
        .to_owned();
    let res = app
        .post(
            "/api/v1/notifications",
            Some(&other_key),
            task_assigned(&[&alice], "x"),
        )
        .await;
    assert_eq!(error_code(res).await, (422, "unknown_recipients".into()));
}

async fn next_notification_event(ws: &mut Ws) -> Value {
    next_pub(ws).await["data"].clone()
}

async fn next_pub(ws: &mut Ws) -> Value {
    loop {
        let frame = ws.recv().await;
        if frame["type"] == "pub" {
            return frame;
        }
    }
}

#[tokio::test]
async fn two_tabs_of_one_user_get_new_notifications_and_stay_in_sync() {
    let app = spawn_app().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, token) = app.user("alice@example.com", &["member"]).await;
    let channel = format!("user:{alice}");
    let mut tab1 = app.ws_connected(&token).await;
    let mut tab2 = app.ws_connected(&token).await;
    tab1.subscribe(&channel).await;
    tab2.subscribe(&channel).await;

    trigger(&app, &key, task_assigned(&[&alice], "Relire")).await;
    let a = next_notification_event(&mut tab1).await;
    let b = next_notification_event(&mut tab2).await;
    assert_eq!(a, b);
    assert_eq!(a["type"], "notification.created");
    assert!(
        a["notification"]["title"]
            .as_str()
            .unwrap()
            .contains("Relire"),
        "{a}"
    );
    assert_eq!(a["counts"]["unread"], 1);
    assert_eq!(a["counts"]["categories"]["tasks"]["unread"], 1);
    let id = a["notification"]["id"].as_i64().unwrap();
    let v1 = a["counts"]["version"].as_i64().unwrap();

    // Reading on one device updates every tab.
    app.post(&format!("/api/v1/inbox/{id}/read"), Some(&token), json!({}))
        .await;
    let mut last = (Value::Null, Value::Null);
    for tab in [&mut tab1, &mut tab2] {
        let frame = next_pub(tab).await;
        last = (frame["epoch"].clone(), frame["offset"].clone());
        let u = frame["data"].clone();
        assert_eq!(u["type"], "notification.updated");
        assert_eq!(u["action"], "read");
        assert_eq!(u["ids"], json!([id]));
        assert_eq!(u["counts"]["unread"], 0);
        assert!(u["counts"]["version"].as_i64().unwrap() > v1);
    }

    // A tab that reconnects recovers what it missed from the channel history.
    drop(tab1);
    trigger(&app, &key, task_assigned(&[&alice], "Pendant l'absence")).await;
    next_notification_event(&mut tab2).await;
    let mut back = app.ws_connected(&token).await;
    let reply = back
        .request(json!({"type": "subscribe", "channel": channel, "recover": {"epoch": last.0, "offset": last.1}}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let missed = next_pub(&mut back).await;
    assert_eq!(missed["data"]["type"], "notification.created");
    assert_eq!(missed["data"]["counts"]["unread"], 1);
}

#[tokio::test]
async fn a_trigger_reaches_roles_projects_and_the_whole_tenant_in_pages() {
    // Small pages, so the fan-out spans several transactions.
    let app = spawn_app_with(&[("RELAIS_NOTIFY_BATCH", "7")]).await;
    let key = app.api_key(&["notify"]).await;
    let (m1, m1_token) = app.user("mod1@example.com", &["moderator"]).await;
    let (_m2, m2_token) = app.user("mod2@example.com", &["moderator", "member"]).await;
    let (_c, c_token) = app.user("client@example.com", &["client"]).await;
    // 30 more users straight into the store.
    for i in 0..30 {
        sqlx::query("INSERT INTO users (id, tenant_id, email, display_name, password_hash, roles, created_at, updated_at) SELECT $1, tenant_id, $2, $2, 'x', 'member', 0, 0 FROM users WHERE id = $3")
            .bind(format!("bulk-{i:03}"))
            .bind(format!("bulk{i}@example.com"))
            .bind(&m1)
            .execute(&app.state.store.pool)
            .await
            .unwrap();
    }
    let t = trigger(&app, &key, announcement(json!({"roles": ["moderator"]}))).await;
    assert_eq!(t["recipients"], 2);
    done(&app, &key, &t).await;
    assert_eq!(counts(&app, &m1_token).await["unread"], 1);
    assert_eq!(counts(&app, &m2_token).await["unread"], 1);
    assert_eq!(counts(&app, &c_token).await["unread"], 0);

    // Everyone (admin + 3 users + 30), each exactly once; the actor excluded.
    let mut body = announcement(json!({"all": true, "roles": ["moderator"]}));
    body["actor"] = json!(m1);
    let t = trigger(&app, &key, body).await;
    assert_eq!(t["recipients"], 33);
    let view = done(&app, &key, &t).await;
    assert_eq!(view["created"], 33);
    assert_eq!(counts(&app, &m1_token).await["unread"], 1);
    assert_eq!(counts(&app, &m2_token).await["unread"], 2);
    assert_eq!(counts(&app, &c_token).await["unread"], 1);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE trigger_id = $1")
        .bind(t["id"].as_str().unwrap())
        .fetch_one(&app.state.store.pool)
        .await
        .unwrap();
    assert_eq!(rows, 33);

    // A fan-out redone from the start, as after a lost lease, with three
    // users added meanwhile between existing ones: pages then mix rows that
    // exist (skipped, not counted again) with new ones (created and counted).
    for i in [5, 12, 20] {
        sqlx::query("INSERT INTO users (id, tenant_id, email, display_name, password_hash, roles, created_at, updated_at) SELECT $1, tenant_id, $2, $2, 'x', 'member', 0, 0 FROM users WHERE id = $3")
            .bind(format!("bulk-{i:03}x"))
            .bind(format!("late{i}@example.com"))
            .bind(&m1)
            .execute(&app.state.store.pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE notification_triggers SET status = 'pending', resume_after = '', processed = 0, lease_until = 0, completed_at = NULL WHERE id = $1")
        .bind(t["id"].as_str().unwrap())
        .execute(&app.state.store.pool)
        .await
        .unwrap();
    app.state.notify.fanout_wake.notify_one();
    let view = done(&app, &key, &t).await;
    assert_eq!(view["created"], 36, "33 before, 3 for the late users");
    let per_user: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, COUNT(*) FROM notifications WHERE trigger_id = $1 GROUP BY user_id",
    )
    .bind(t["id"].as_str().unwrap())
    .fetch_all(&app.state.store.pool)
    .await
    .unwrap();
    assert_eq!(per_user.len(), 36);
    assert!(per_user.iter().all(|(_, n)| *n == 1), "{per_user:?}");
    assert_eq!(counts(&app, &m2_token).await["unread"], 2);
    assert_eq!(counts(&app, &c_token).await["unread"], 1);
    let late_unread: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(SUM(unread) AS BIGINT) FROM notification_counts WHERE user_id LIKE 'bulk-%x' GROUP BY user_id ORDER BY user_id",
    )
    .fetch_all(&app.state.store.pool)
    .await
    .unwrap();
    assert_eq!(late_unread, vec![1, 1, 1]);
}

#[tokio::test]
async fn project_events_notify_the_members_but_not_the_actor() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (alice, alice_token) = app.user("alice@example.com", &["member"]).await;
    let (bob, bob_token) = app.user("bob@example.com", &["member"]).await;
    let (carol, carol_token) = app.user("carol@example.com", &["member"]).await;
    let (_dan, dan_token) = app.user("dan@example.com", &["member"]).await;
    let res = app
        .post(
            "/api/v1/projects",
            Some(&admin),
            json!({"name": "Offre fibre", "external_ref": "PRJ-7", "members": [{"user_id": alice, "role": "owner"}, {"user_id": bob}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let project: Value = res.json().await.unwrap();
    let pid = project["id"].as_str().unwrap().to_owned();
    assert_eq!(project["members"].as_array().unwrap().len(), 2);
    let res = app
        .http
        .put(app.url(&format!("/api/v1/projects/{pid}/members/{carol}")))
        .bearer_auth(&admin)
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A member sees the project; an outsider neither sees it nor subscribes to its channel.
    assert_eq!(
        app.get(&format!("/api/v1/projects/{pid}"), Some(&bob_token))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get(&format!("/api/v1/projects/{pid}"), Some(&dan_token))
            .await
            .status(),
        404
    );
    let mut outsider = app.ws_connected(&dan_token).await;
    let reply = outsider
        .request(json!({"type": "subscribe", "channel": format!("project:{pid}")}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    let mut watcher = app.ws_connected(&bob_token).await;
    watcher.subscribe(&format!("project:{pid}")).await;

    let key = app.api_key(&["projects"]).await;
    let res = app
        .post(
            &format!("/api/v1/projects/{pid}/events"),
            Some(&key),
            json!({"event": "phase_changed", "actor": carol, "payload": {"phase": {"name": "Conception", "status": "terminée"}, "actor": {"name": "Carol"}}}),
        )
        .await;
    let status = res.status();
    let t: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{t}");
    assert_eq!(t["recipients"], 2);
    let event = watcher.publications(1).await.remove(0);
    assert_eq!(event["data"]["event"], "phase_changed");

    let notify_key = app.api_key(&["notify"]).await;
    done(&app, &notify_key, &t).await;
    for token in [&alice_token, &bob_token] {
        let items = inbox(&app, token, "").await;
        let item = &items["items"][0];
        assert_eq!(item["type"], "project.phase_changed");
        assert!(
            item["title"].as_str().unwrap().contains("Offre fibre")
                || item["body"].as_str().unwrap().contains("Offre fibre"),
            "{item}"
        );
    }
    assert_eq!(counts(&app, &carol_token).await["unread"], 0);
    assert_eq!(counts(&app, &dan_token).await["unread"], 0);

    // A retried report is the first one, marked as a replay, published once.
    let report = |body: Value| {
        app.http
            .post(app.url(&format!("/api/v1/projects/{pid}/events")))
            .bearer_auth(&key)
            .header("Idempotency-Key", "step-42-done")
            .json(&body)
            .send()
    };
    let body = json!({"event": "step_changed", "actor": alice, "payload": {"step": {"id": "s42", "name": "Maquettes", "status": "validée"}, "actor": {"name": "Alice"}}});
    let first = report(body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = report(body).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let events = watcher.publications(1).await;
    assert_eq!(events[0]["data"]["event"], "step_changed");
    done(&app, &notify_key, &first).await;
    assert_eq!(counts(&app, &bob_token).await["unread"], 2);

    // An event whose only member is its actor notifies nobody, and is no
    // error: it is accepted as done and still goes out on the channel.
    let res = app
        .post(
            "/api/v1/projects",
            Some(&admin),
            json!({"name": "Solo", "members": [{"user_id": carol, "role": "owner"}]}),
        )
        .await;
    let solo = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut carol_ws = app.ws_connected(&carol_token).await;
    carol_ws.subscribe(&format!("project:{solo}")).await;
    let carol_unread = counts(&app, &carol_token).await["unread"].clone();
    assert_eq!(carol_unread, 1, "the step change");
    let res = app
        .post(
            &format!("/api/v1/projects/{solo}/events"),
            Some(&key),
            json!({"event": "task_changed", "actor": carol, "payload": {"task": {"id": "t7", "title": "Relire", "status": "faite"}, "actor": {"name": "Carol"}}}),
        )
        .await;
    let status = res.status();
    let t: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{t}");
    assert_eq!(t["recipients"], 0);
    assert_eq!(t["status"], "done");
    assert_eq!(done(&app, &notify_key, &t).await["created"], 0);
    let event = carol_ws.publications(1).await.remove(0);
    assert_eq!(event["data"]["event"], "task_changed");
    assert_eq!(counts(&app, &carol_token).await["unread"], carol_unread);

    let res = app
        .post(
            &format!("/api/v1/projects/{pid}/events"),
            Some(&key),
            json!({"event": "exploded", "payload": {}}),
        )
        .await;
    assert_eq!(error_code(res).await, (422, "unknown_type".into()));
    let res = app
        .post(
            &format!("/api/v1/projects/{pid}/events"),
            Some(&alice_token),
            json!({"event": "phase_changed", "payload": {}}),
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn preferences_validate_merge_and_silence_in_app_delivery() {
    let app = spawn_app().await;
    let key = app.api_key(&["notify"]).await;
    let (alice, token) = app.user("alice@example.com", &["member"]).await;
    let defaults: Value = app
        .get("/api/v1/me/preferences", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(defaults["digest_hour"], 8);

    let patch = |body: Value| {
        app.http
            .patch(app.url("/api/v1/me/preferences"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    for (body, code) in [
        (json!({"timezone": "Europe/Nowhere"}), "invalid_timezone"),
        (
            json!({"quiet_hours": {"start": "22h", "end": "07:00"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"quiet_hours": {"start": "22:00", "end": "22:00"}}),
            "invalid_quiet_hours",
        ),
        (
            json!({"categories": {"tasks": {"frequency": "hourly"}}}),
            "invalid_preferences",
        ),
        (json!({"locale": "de"}), "invalid_preferences"),
    ] {
        let res = patch(body.clone()).await.unwrap();
        assert_eq!(error_code(res).await, (422, code.to_owned()), "{body}");
    }
    let res = patch(json!({"timezone": "Africa/Ouagadougou", "locale": "fr", "categories": {"tasks": {"in_app": false, "email": false}}})).await.unwrap();
    assert_eq!(res.status(), 200);
    let res = patch(json!({"categories": {"system": {"frequency": "daily"}}}))
        .await
        .unwrap();
    let saved: Value = res.json().await.unwrap();
    assert_eq!(saved["timezone"], "Africa/Ouagadougou");
    assert_eq!(saved["categories"]["tasks"]["in_app"], false);
    assert_eq!(saved["categories"]["system"]["frequency"], "daily");

    // Opted out of tasks: nothing in the inbox; announcements arrive, in French.
    let t = trigger(&app, &key, task_assigned(&[&alice], "Muette")).await;
    done(&app, &key, &t).await;
    let t = trigger(&app, &key, announcement(json!({"users": [alice]}))).await;
    done(&app, &key, &t).await;
    let items = inbox(&app, &token, "").await;
    let items = items["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["type"], "system.announcement");
    let fr = crate::notifications::french_title("system.announcement", &app, &token).await;
    assert_eq!(items[0]["title"], fr);
}

/// The French title template of a built-in, filled like the test payload.
pub async fn french_title(key: &str, app: &TestApp, token: &str) -> String {
    let ty: Value = app
        .get(&format!("/api/v1/notification-types/{key}"), Some(token))
        .await
        .json()
        .await
        .unwrap();
    ty["templates"]["fr"]["title"]
        .as_str()
        .unwrap()
        .replace("{{ announcement.title }}", "Maintenance")
}

/// Reads `/metrics` until `line` (a metric with its labels, then its value)
/// is there.
async fn wait_metric_line(app: &TestApp, line: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{line}` in /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_show_the_queues_backlogs_and_the_build() {
    let app = spawn_app_with(&[("RELAIS_NOTIFY_POLL_SECS", "0.1")]).await;
    let key = app.api_key(&["notify"]).await;
    let (bob, _) = app.user("bob@example.com", &["member"]).await;
    wait_metric_line(
        &app,
        &format!(
            "relais_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    )
    .await;
    done(
        &app,
        &key,
        &trigger(&app, &key, task_assigned(&[&bob], "Brief")).await,
    )
    .await;
    // Fanned out: no trigger waits; its fallback email waits for its delay.
    wait_metric_line(
        &app,
        "relais_notification_triggers_backlog{state=\"pending\"} 0",
    )
    .await;
    wait_metric_line(
        &app,
        "relais_notification_triggers_backlog{state=\"processing\"} 0",
    )
    .await;
    wait_metric_line(&app, "relais_email_outbox_backlog{state=\"scheduled\"} 1").await;
    wait_metric_line(&app, "relais_email_outbox_backlog{state=\"due\"} 0").await;
    // Its time comes, it is written out, and nothing waits any more.
    app.state.notify.clock.advance(Duration::from_secs(301));
    wait_metric_line(&app, "relais_email_outbox_backlog{state=\"scheduled\"} 0").await;
    wait_metric_line(&app, "relais_email_outbox_backlog{state=\"due\"} 0").await;
    assert_eq!(app.metric("relais_emails_sent_total").await, 1.0);
}
