//! Moderation queues: items, the state machine and its audit trail, exact
//! counts under concurrent moderators, live coalesced counts on `queues`,
//! and the submitter's notification of the decision.

use std::{collections::BTreeMap, time::Duration};

use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, WAIT, Ws, first_cluster_node, spawn_app, spawn_app_with},
    notifications::inbox,
};

async fn body(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn create(app: &TestApp, key: &str, queue: &str, body_: Value) -> (u16, Value) {
    body(
        app.post(&format!("/api/v1/queues/{queue}/items"), Some(key), body_)
            .await,
    )
    .await
}

async fn transition(
    app: &TestApp,
    token: &str,
    queue: &str,
    id: &str,
    change: Value,
) -> (u16, Value) {
    body(
        app.post(
            &format!("/api/v1/queues/{queue}/items/{id}/transition"),
            Some(token),
            change,
        )
        .await,
    )
    .await
}

async fn counts(app: &TestApp, token: &str) -> Value {
    let (status, counts) = body(app.get("/api/v1/queues", Some(token)).await).await;
    assert_eq!(status, 200, "{counts}");
    counts["queues"].clone()
}

#[tokio::test]
async fn an_item_moves_through_its_states_with_an_audit_trail_and_the_submitter_hears_the_decision()
{
    let app = spawn_app().await;
    let key = app.api_key(&["queues"]).await;
    let (moderator_id, moderator) = app.user("mod@example.com", &["moderator"]).await;
    let (sub_id, submitter) = app.user("sub@example.com", &["client"]).await;
    let (_, stranger) = app.user("other@example.com", &["client"]).await;
    let res = app
        .http
        .patch(app.url("/api/v1/me/preferences"))
        .bearer_auth(&submitter)
        .json(&json!({"locale": "fr"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let item = json!({"external_ref": "camp-1", "title": "Campagne Noël", "submitter": sub_id, "payload": {"budget": 1200}});
    let (status, created) = create(&app, &key, "campaigns", item.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["version"], 1);
    let id = created["id"].as_str().unwrap().to_owned();

    // The same submission again is the same item; other content under the
    // same reference is refused.
    let res = app
        .post("/api/v1/queues/campaigns/items", Some(&key), json!({"external_ref": "camp-1", "title": "Campagne Noël", "submitter": sub_id, "payload": {"budget": 1200}}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(res.json::<Value>().await.unwrap()["id"], json!(id));
    let (status, err) = create(
        &app,
        &key,
        "campaigns",
        json!({"external_ref": "camp-1", "title": "Autre", "submitter": sub_id}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("item_exists"))
    );
    assert_eq!(counts(&app, &key).await["campaigns"]["pending"], 1);

    // The submitter sees their item; a stranger is told it does not exist
    // and no client may decide.
    let path = format!("/api/v1/queues/campaigns/items/{id}");
    assert_eq!(app.get(&path, Some(&submitter)).await.status(), 200);
    assert_eq!(app.get(&path, Some(&stranger)).await.status(), 404);
    let (status, _) = transition(
        &app,
        &submitter,
        "campaigns",
        &id,
        json!({"to": "approved"}),
    )
    .await;
    assert_eq!(status, 403);

    // Taken for review by the acting moderator, then released and taken again.
    let (status, reviewed) = transition(
        &app,
        &moderator,
        "campaigns",
        &id,
        json!({"to": "in_review"}),
    )
    .await;
    assert_eq!(status, 200, "{reviewed}");
    assert_eq!(reviewed["assignee"], json!(moderator_id));
    assert_eq!(counts(&app, &key).await["campaigns"]["in_review"], 1);

    // A rejection needs a reason; then it is final.
    let (status, err) = transition(
        &app,
        &moderator,
        "campaigns",
        &id,
        json!({"to": "rejected"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("reason_required"))
    );
    let (status, rejected) = transition(
        &app,
        &moderator,
        "campaigns",
        &id,
        json!({"to": "rejected", "reason": "Visuel flou"}),
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["reason"], "Visuel flou");
    assert_eq!(rejected["assignee"], Value::Null);
    let (status, err) = transition(
        &app,
        &moderator,
        "campaigns",
        &id,
        json!({"to": "approved"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("invalid_transition"))
    );

    let c = counts(&app, &key).await;
    assert_eq!(
        c["campaigns"],
        json!({"pending": 0, "in_review": 0, "approved": 0, "rejected": 1, "withdrawn": 0})
    );

    let (status, trail) = body(app.get(&format!("{path}/events"), Some(&submitter)).await).await;
    assert_eq!(status, 200);
    let trail = trail["events"].as_array().unwrap().clone();
    let steps: Vec<(Value, Value, Value)> = trail
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone(), e["actor"].clone()))
        .collect();
    assert!(trail[0]["actor"].as_str().unwrap().starts_with("key:"));
    assert_eq!(
        steps[1..],
        [
            (
                json!("pending"),
                json!("in_review"),
                json!(format!("user:{moderator_id}"))
            ),
            (
                json!("in_review"),
                json!("rejected"),
                json!(format!("user:{moderator_id}"))
            ),
        ]
    );
    assert_eq!(trail[2]["reason"], "Visuel flou");
    assert_eq!(steps[0].1, "pending");

    // The submitter is told, with the reason, in their language (French,
    // chosen at the start).

    let second = create(
        &app,
        &key,
        "spots",
        json!({"external_ref": "spot-9", "title": "Spot 30s", "submitter": sub_id}),
    )
    .await
    .1;
    let second_id = second["id"].as_str().unwrap();
    let (status, _) = transition(
        &app,
        &moderator,
        "spots",
        second_id,
        json!({"to": "approved"}),
    )
    .await;
    assert_eq!(status, 200);
    let items = eventually_inbox(&app, &submitter, 2).await;
    let texts: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{} | {}",
                i["title"].as_str().unwrap(),
                i["body"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Demande validée : Spot 30s")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Demande refusée : Campagne Noël") && t.contains("Visuel flou")),
        "{texts:?}"
    );

    // The submitter may withdraw an open item of theirs, nothing else.
    let third = create(
        &app,
        &key,
        "spots",
        json!({"external_ref": "spot-10", "title": "Spot 20s", "submitter": sub_id}),
    )
    .await
    .1;
    let third_id = third["id"].as_str().unwrap();
    let (status, _) = transition(
        &app,
        &stranger,
        "spots",
        third_id,
        json!({"to": "withdrawn"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, withdrawn) = transition(
        &app,
        &submitter,
        "spots",
        third_id,
        json!({"to": "withdrawn"}),
    )
    .await;
    assert_eq!(
        (status, withdrawn["status"].as_str()),
        (200, Some("withdrawn"))
    );
    let (status, err) = transition(
        &app,
        &moderator,
        "spots",
        third_id,
        json!({"to": "approved"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("invalid_transition"))
    );
}

/// The inbox once it holds `n` items.
async fn eventually_inbox(app: &TestApp, token: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let items = inbox(app, token, "").await["items"]
            .as_array()
            .unwrap()
            .clone();
        if items.len() >= n {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "inbox has {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn lists_filter_and_page_and_bulk_transitions_report_each_item() {
    let app = spawn_app().await;
    let key = app.api_key(&["queues"]).await;
    let (sub_id, submitter) = app.user("sub@example.com", &["client"]).await;
    let mut ids = Vec::new();
    for i in 0..7usize {
        let submitter = if i.is_multiple_of(2) {
            json!(sub_id)
        } else {
            Value::Null
        };
        let (status, item) = create(&app, &key, "requests", json!({"external_ref": format!("r{i}"), "title": format!("Request {i}"), "submitter": submitter})).await;
        assert_eq!(status, 201, "{item}");
        ids.push(item["id"].as_str().unwrap().to_owned());
    }

    // Withdraw one, then approve everything in one call: the withdrawn one
    // and an unknown id fail, the others pass.
    transition(&app, &key, "requests", &ids[3], json!({"to": "withdrawn"})).await;
    let mut asked = ids.clone();
    asked.push("no-such-item".into());
    let (status, report) = body(
        app.post(
            "/api/v1/queues/requests/transitions",
            Some(&key),
            json!({"ids": asked, "to": "approved"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["applied"].as_u64(), report["failed"].as_u64()),
        (Some(6), Some(2))
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    assert_eq!(results[3]["error"]["code"], "invalid_transition");
    assert_eq!(results[7]["error"]["code"], "not_found");
    assert!(
        results
            .iter()
            .enumerate()
            .all(|(i, r)| r["id"] == json!(asked[i]))
    );

    // Pages of 2 through the approved items, in order, with no repeat.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/queues/requests/items?status=approved&limit=2".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = body(app.get(&path, Some(&key)).await).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["status"], "approved");
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(seen, expected);

    // A submitter lists only their own items, whatever they ask.
    let (status, mine) = body(
        app.get("/api/v1/queues/requests/items", Some(&submitter))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(mine["items"].as_array().unwrap().len(), 4);
    let (status, _) = body(
        app.get(
            "/api/v1/queues/requests/items?submitter=someone-else",
            Some(&submitter),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    let (status, err) = body(
        app.get("/api/v1/queues/requests/items?status=done", Some(&key))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("invalid_query"))
    );
}

/// Counts per queue and status straight from the items, to compare with the
/// maintained counters.
async fn recount(app: &TestApp) -> BTreeMap<(String, String), i64> {
    use sqlx::Row;
    let rows =
        sqlx::query("SELECT queue, status, COUNT(*) AS n FROM queue_items GROUP BY queue, status")
            .fetch_all(&app.state.store.pool)
            .await
            .unwrap();
    rows.iter()
        .map(|r| {
            (
                (r.get::<String, _>("queue"), r.get::<String, _>("status")),
                r.get::<i64, _>("n"),
            )
        })
        .collect()
}

#[tokio::test]
async fn counts_stay_exact_under_ten_thousand_concurrent_transitions() {
    let app = spawn_app().await;
    let key = app.api_key(&["queues"]).await;
    const ITEMS: usize = 400;
    const TRANSITIONS: usize = 10_000;
    let ids: Vec<String> = stream::iter(0..ITEMS)
        .map(|i| {
            let (app, key) = (&app, &key);
            async move {
                let queue = if i.is_multiple_of(2) {
                    "campaigns"
                } else {
                    "spots"
                };
                let (status, item) = create(
                    app,
                    key,
                    queue,
                    json!({"external_ref": format!("x{i}"), "title": "t"}),
                )
                .await;
                assert_eq!(status, 201, "{item}");
                item["id"].as_str().unwrap().to_owned()
            }
        })
        .buffered(32)
        .collect()
        .await;

    // Mostly back and forth between the open states, so that many
    // moderators race on the same items; some final decisions.
    let targets = [
        "in_review",
        "pending",
        "in_review",
        "pending",
        "in_review",
        "pending",
        "approved",
        "rejected",
        "withdrawn",
    ];
    let outcomes: Vec<u16> = stream::iter(0..TRANSITIONS)
        .map(|n| {
            let (app, key, ids) = (&app, &key, &ids);
            async move {
                let i = (n * 7919) % ITEMS;
                let queue = if i.is_multiple_of(2) {
                    "campaigns"
                } else {
                    "spots"
                };
                let to = targets[(n * 31 + n / ITEMS) % targets.len()];
                let (status, res) =
                    transition(app, key, queue, &ids[i], json!({"to": to, "reason": "r"})).await;
                assert!(status == 200 || status == 409, "{status} {res}");
                status
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let applied = outcomes.iter().filter(|s| **s == 200).count();
    assert!(
        applied > ITEMS,
        "only {applied} transitions applied: the test would not race"
    );

    let live = counts(&app, &key).await;
    let recounted = recount(&app).await;
    let mut total = 0;
    for queue in ["campaigns", "spots"] {
        for status in ["pending", "in_review", "approved", "rejected", "withdrawn"] {
            let n = recounted
                .get(&(queue.to_owned(), status.to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(live[queue][status], json!(n), "{queue}/{status}: {live}");
            total += n;
        }
    }
    assert_eq!(total as usize, ITEMS);
    // Every applied transition left exactly one audit line.
    use sqlx::Row;
    let lines: i64 = sqlx::query("SELECT COUNT(*) AS n FROM queue_item_events")
        .fetch_one(&app.state.store.pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(lines as usize, ITEMS + applied);
}

/// `queue.counts` publications until `done` says the last one is enough.
async fn count_updates(ws: &mut Ws, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let frame = ws.recv().await;
        if frame["type"] == "pub" && frame["channel"] == "queues" {
            let data = frame["data"].clone();
            assert_eq!(data["type"], "queue.counts");
            let stop = done(&data);
            out.push(data);
            if stop {
                return out;
            }
        }
    }
}

#[tokio::test]
async fn consoles_get_counts_on_subscribe_then_coalesced_updates_ending_with_the_final_counts() {
    const WINDOW_MS: i64 = 200;
    let app = spawn_app_with(&[("RELAIS_QUEUE_COUNTS_WINDOW_MS", "200")]).await;
    let key = app.api_key(&["queues"]).await;
    let (_, moderator) = app.user("mod@example.com", &["moderator"]).await;
    let (_, client) = app.user("client@example.com", &["client"]).await;
    create(
        &app,
        &key,
        "spots",
        json!({"external_ref": "s0", "title": "t"}),
    )
    .await;

    // Only moderators and admins watch the counts.
    let mut outsider = app.ws_connected(&client).await;
    let refused = outsider
        .request(json!({"type": "subscribe", "channel": "queues"}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");

    let mut console = app.ws_connected(&moderator).await;
    let subscribed = console.subscribe("queues").await;
    assert_eq!(
        subscribed["snapshot"]["queues"]["spots"]["pending"], 1,
        "{subscribed}"
    );

    // A burst: 60 items, then 30 of them approved.
    const BURST: usize = 60;
    let mut ids = Vec::new();
    for i in 0..BURST {
        let (_, item) = create(
            &app,
            &key,
            "spots",
            json!({"external_ref": format!("b{i}"), "title": "t"}),
        )
        .await;
        ids.push(item["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..30] {
        let (status, _) = transition(&app, &key, "spots", id, json!({"to": "approved"})).await;
        assert_eq!(status, 200);
    }
    let last =
        json!({"pending": 31, "in_review": 0, "approved": 30, "rejected": 0, "withdrawn": 0});
    let updates = count_updates(&mut console, |u| u["queues"]["spots"] == last).await;

    // Fewer frames than changes, each carrying absolute counts of the
    // queues that moved, and never two within one window (by the hub's own
    // clock).
    assert!(
        updates.len() < BURST + 30,
        "{} updates for {} changes",
        updates.len(),
        BURST + 30
    );
    for pair in updates.windows(2) {
        let gap = pair[1]["as_of"].as_i64().unwrap() - pair[0]["as_of"].as_i64().unwrap();
        assert!(gap >= WINDOW_MS - 1, "two updates {gap} ms apart: {pair:?}");
        let pending = |u: &Value| {
            let c = &u["queues"]["spots"];
            c["pending"].as_i64().unwrap() + c["approved"].as_i64().unwrap()
        };
        assert!(
            pending(&pair[1]) >= pending(&pair[0]),
            "counts went backwards: {pair:?}"
        );
    }

    // Activity stopped and the last word was the final state: no update
    // follows (the settling read finds nothing new).
    let quiet = tokio::time::timeout(
        Duration::from_millis(3 * WINDOW_MS as u64),
        count_updates(&mut console, |_| true),
    )
    .await;
    assert!(
        quiet.is_err(),
        "an update after the final counts: {quiet:?}"
    );
}

#[tokio::test]
async fn counts_changed_on_one_node_reach_consoles_on_another() {
    let a = first_cluster_node().await;
    let b = a.spawn_peer().await;
    let key = a.api_key(&["queues"]).await;
    let (_, moderator) = a.user("mod@example.com", &["moderator"]).await;
    let mut console = a.ws_connected(&moderator).await;
    let subscribed = console.subscribe("queues").await;
    assert_eq!(subscribed["snapshot"]["queues"], json!({}));

    // Changes on both nodes; the console on A ends on the final counts.
    let mut ids = Vec::new();
    for i in 0..10usize {
        let node = if i.is_multiple_of(2) { &a } else { &b };
        let (status, item) = create(
            node,
            &key,
            "campaigns",
            json!({"external_ref": format!("c{i}"), "title": "t"}),
        )
        .await;
        assert_eq!(status, 201);
        ids.push(item["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..4] {
        let (status, _) = transition(
            &b,
            &key,
            "campaigns",
            id,
            json!({"to": "rejected", "reason": "no"}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let last = json!({"pending": 6, "in_review": 0, "approved": 0, "rejected": 4, "withdrawn": 0});
    count_updates(&mut console, |u| u["queues"]["campaigns"] == last).await;
    assert_eq!(counts(&b, &key).await["campaigns"], last);
}
