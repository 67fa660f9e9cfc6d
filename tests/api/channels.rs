//! Channel policies, tenant isolation, presence, history and recovery.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn personal_channels_belong_to_their_user_only() {
    let app = spawn_app().await;
    let (ana, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (bo, _) = app.user("bo@example.com", &["member"]).await;
    let mut ws = app.ws_connected(&ana_token).await;
    ws.subscribe(&format!("user:{ana}")).await;
    let reply = ws
        .request(json!({"type": "subscribe", "channel": format!("user:{bo}")}))
        .await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    // Clients cannot publish to personal channels, even their own.
    let reply = ws
        .request(json!({"type": "publish", "channel": format!("user:{ana}"), "data": 1}))
        .await;
    assert_eq!(reply["code"], "forbidden");
    // The backend can; the owner receives it.
    let key = app.api_key(&["publish"]).await;
    app.publish(&key, &format!("user:{ana}"), json!({"unread": 3}))
        .await;
    let p = ws.publications(1).await;
    assert_eq!(p[0]["data"], json!({"unread": 3}));
    assert_eq!(p[0]["offset"], 1);
}

#[tokio::test]
async fn role_channels_admit_holders_of_the_role() {
    let app = spawn_app().await;
    let (_, moderator) = app.user("mo@example.com", &["moderator", "member"]).await;
    let mut ws = app.ws_connected(&moderator).await;
    ws.subscribe("role:moderator").await;
    ws.subscribe("role:member").await;
    assert_eq!(
        ws.request(json!({"type": "subscribe", "channel": "role:admin"}))
            .await["code"],
        "forbidden"
    );
    assert_eq!(
        ws.request(json!({"type": "subscribe", "channel": "role:nonsense"}))
            .await["code"],
        "forbidden"
    );
}

#[tokio::test]
async fn broadcast_is_open_to_members_but_only_admins_publish_or_see_presence() {
    let app = spawn_app().await;
    let (_, member) = app.user("me@example.com", &["member"]).await;
    let admin = app.admin_token().await;
    let mut m = app.ws_connected(&member).await;
    let mut a = app.ws_connected(&admin).await;
    m.subscribe("broadcast").await;
    a.subscribe("broadcast").await;
    assert_eq!(
        m.request(json!({"type": "publish", "channel": "broadcast", "data": "x"}))
            .await["code"],
        "forbidden"
    );
    assert_eq!(
        m.request(json!({"type": "presence", "channel": "broadcast"}))
            .await["code"],
        "forbidden"
    );
    let published = a
        .request(json!({"type": "publish", "channel": "broadcast", "data": {"hello": "all"}}))
        .await;
    assert_eq!(published["type"], "published");
    assert_eq!(published["offset"], 1);
    assert_eq!(m.publications(1).await[0]["data"]["hello"], "all");
    let presence = a
        .request(json!({"type": "presence", "channel": "broadcast"}))
        .await;
    assert_eq!(presence["users"], 2);
    assert_eq!(presence["clients"], 2);
}

#[tokio::test]
async fn a_registered_namespace_applies_its_own_policy_with_presence_events() {
    let app = spawn_app().await;
    let (ana, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = app.user("bo@example.com", &["client"]).await;
    let mut a = app.ws_connected(&ana_token).await;
    a.subscribe("room:lobby").await;
    // Every subscriber, the joiner included, sees a join.
    assert_eq!(a.recv().await["user"], ana.as_str());
    let mut b = app.ws_connected(&bo_token).await;
    b.subscribe("room:lobby").await;
    let join = a.recv().await;
    assert_eq!(
        (join["type"].as_str(), join["user"].as_str()),
        (Some("join"), Some(bo.as_str()))
    );
    let presence = b
        .request(json!({"type": "presence", "channel": "room:lobby"}))
        .await;
    let mut users: Vec<_> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    users.sort();
    let mut expected = vec![ana.clone(), bo.clone()];
    expected.sort();
    assert_eq!(users, expected);
    // Clients may publish here; everyone subscribed receives it once.
    let reply = b
        .request(json!({"type": "publish", "channel": "room:lobby", "data": {"text": "salut"}}))
        .await;
    assert_eq!(reply["type"], "published");
    assert_eq!(a.publications(1).await[0]["data"]["text"], "salut");
    // A second connection of Bo does not re-announce him; closing both does.
    let mut b2 = app.ws_connected(&bo_token).await;
    b2.subscribe("room:lobby").await;
    drop(b2);
    drop(b);
    let leave = loop {
        let frame = a.recv().await;
        if frame["type"] != "pub" {
            break frame;
        }
    };
    assert_eq!(
        (leave["type"].as_str(), leave["user"].as_str()),
        (Some("leave"), Some(bo.as_str()))
    );
    let presence = a
        .request(json!({"type": "presence", "channel": "room:lobby"}))
        .await;
    assert_eq!(presence["users"], 1);
}

#[tokio::test]
async fn tenants_cannot_reach_each_others_channels_or_history() {
    let app = spawn_app().await;
    let (outsider, out_token) = app.other_tenant_admin().await;
    let out_token = out_token.as_str();
    let (ana, ana_token) = app.user("ana@example.com", &["member"]).await;

    // Same channel name, different tenants: nothing crosses.
    let mut inside = app.ws_connected(&ana_token).await;
    inside.subscribe("broadcast").await;
    let mut outside = app.ws_connected(out_token).await;
    outside.subscribe("broadcast").await;
    let key = app.api_key(&["publish"]).await;
    app.publish(&key, "broadcast", json!("for default only"))
        .await;
    assert_eq!(inside.publications(1).await[0]["data"], "for default only");
    let history = outside
        .request(json!({"type": "history", "channel": "broadcast"}))
        .await;
    assert_eq!(
        history["publications"],
        json!([]),
        "other tenant's history is separate"
    );
    assert_eq!(
        outside.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    // An admin of the other tenant cannot subscribe to a user of this one...
    assert_eq!(
        outside
            .request(json!({"type": "subscribe", "channel": format!("user:{ana}")}))
            .await["code"],
        "forbidden"
    );
    // ...nor manage its users, nor see them.
    let users: Value = app
        .get("/api/v1/admin/users", Some(out_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
    assert_eq!(users["items"][0]["id"], outsider.as_str());
    let res = app
        .get(&format!("/api/v1/admin/users/{ana}"), Some(out_token))
        .await;
    assert_eq!(res.status(), 404);
    // Its own publications stay in its tenant.
    let other_pub = outside
        .request(json!({"type": "publish", "channel": "broadcast", "data": "other"}))
        .await;
    assert_eq!(other_pub["offset"], 1);
    let history = inside
        .request(json!({"type": "history", "channel": "broadcast"}))
        .await;
    assert_eq!(history["publications"].as_array().unwrap().len(), 1);
    assert_eq!(history["publications"][0]["data"], "for default only");
}

#[tokio::test]
async fn resubscribing_with_the_last_position_recovers_exactly_what_was_missed() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let key = app.api_key(&["publish"]).await;
    let mut ws = app.ws_connected(&token).await;
    let sub = ws.subscribe("broadcast").await;
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        app.publish(&key, "broadcast", json!({ "n": n })).await;
    }
    let seen = ws.publications(3).await;
    let last = seen.last().unwrap()["offset"].as_u64().unwrap();
    drop(ws);
    for n in 4..=7 {
        app.publish(&key, "broadcast", json!({ "n": n })).await;
    }
    let mut ws = app.ws_connected(&token).await;
    let reply = ws.request(json!({"type": "subscribe", "channel": "broadcast", "recover": {"epoch": epoch, "offset": last}})).await;
    assert_eq!(reply["recovered"], true);
    assert_eq!(reply["offset"], 7);
    let missed = ws.publications(4).await;
    assert_eq!(
        missed
            .iter()
            .map(|p| p["data"]["n"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    // Then live publications continue in order, without duplicates.
    app.publish(&key, "broadcast", json!({ "n": 8 })).await;
    let live = ws.publications(1).await;
    assert_eq!(live[0]["offset"], 8);
}

#[tokio::test]
async fn recovery_with_no_gap_is_recovered_with_nothing_replayed() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let key = app.api_key(&["publish"]).await;
    let first = app.publish(&key, "broadcast", json!(1)).await;
    let mut ws = app.ws_connected(&token).await;
    let reply = ws.request(json!({"type": "subscribe", "channel": "broadcast", "recover": {"epoch": first["epoch"], "offset": 1}})).await;
    assert_eq!(reply["recovered"], true);
    app.publish(&key, "broadcast", json!(2)).await;
    let next = ws.publications(1).await;
    assert_eq!(next[0]["offset"], 2, "nothing before the live publication");
}

#[tokio::test]
async fn recovery_past_the_history_window_says_so() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let mut ws = app.ws_connected(&token).await;
    let sub = ws.subscribe("room:small").await;
    drop(ws);
    let key = app.api_key(&["publish"]).await;
    // The room namespace keeps 5 publications; 8 are missed.
    for n in 1..=8 {
        app.publish(&key, "room:small", json!(n)).await;
    }
    let mut ws = app.ws_connected(&token).await;
    let reply = ws.request(json!({"type": "subscribe", "channel": "room:small", "recover": {"epoch": sub["epoch"], "offset": 0}})).await;
    assert_eq!(reply["recovered"], false);
    assert_eq!(reply["offset"], 8);
    // Nothing partial is replayed: the next frame is the next live publication.
    app.publish(&key, "room:small", json!(9)).await;
    assert_eq!(ws.publications(1).await[0]["offset"], 9);
}

#[tokio::test]
async fn recovery_after_a_restart_reports_the_epoch_change() {
    let app = spawn_app().await;
    let key = app.api_key(&["publish"]).await;
    let before = app.publish(&key, "broadcast", json!("before")).await;
    let app = app.restart().await;
    let token = app.admin_token().await;
    let mut ws = app.ws_connected(&token).await;
    let reply = ws.request(json!({"type": "subscribe", "channel": "broadcast", "recover": {"epoch": before["epoch"], "offset": 1}})).await;
    assert_eq!(reply["recovered"], false);
    assert_ne!(reply["epoch"], before["epoch"]);
}

#[tokio::test]
async fn history_returns_the_latest_publications_or_those_after_a_position() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let key = app.api_key(&["publish"]).await;
    let mut epoch = Value::Null;
    for n in 1..=4 {
        epoch = app.publish(&key, "broadcast", json!(n)).await["epoch"].clone();
    }
    let mut ws = app.ws_connected(&token).await;
    let latest = ws
        .request(json!({"type": "history", "channel": "broadcast", "limit": 2}))
        .await;
    assert_eq!(
        latest["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["data"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    let since = ws.request(json!({"type": "history", "channel": "broadcast", "since": {"epoch": epoch, "offset": 1}})).await;
    assert_eq!(since["complete"], true);
    assert_eq!(since["publications"].as_array().unwrap().len(), 3);
    let (_, member) = app.user("ana@example.com", &["member"]).await;
    let mut m = app.ws_connected(&member).await;
    assert_eq!(
        m.request(json!({"type": "history", "channel": "role:admin"}))
            .await["code"],
        "forbidden"
    );
}

/// Pages forward through `channel`'s history with `since`, `limit` at a time.
pub async fn page_forward(ws: &mut Ws, channel: &str, epoch: &Value, limit: u64) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut offset = 0;
    loop {
        let page = ws
            .request(
                json!({"type": "history", "channel": channel, "limit": limit,
                            "since": {"epoch": epoch, "offset": offset}}),
            )
            .await;
        assert_eq!(page["complete"], true, "{page}");
        let offsets: Vec<u64> = page["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect();
        offset = offsets.last().copied().unwrap_or(offset);
        pages.push(offsets);
        if page["more"] == false {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

#[tokio::test]
async fn history_pages_forward_with_since_and_says_when_more_follow() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let key = app.api_key(&["publish"]).await;
    let mut epoch = Value::Null;
    for n in 1..=7 {
        epoch = app.publish(&key, "broadcast", json!(n)).await["epoch"].clone();
    }
    let mut ws = app.ws_connected(&token).await;
    assert_eq!(
        page_forward(&mut ws, "broadcast", &epoch, 3).await,
        vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]
    );
    // `room` keeps 5: what followed offset 1 is partly gone.
    let mut room_epoch = Value::Null;
    for n in 1..=7 {
        room_epoch = app.publish(&key, "room:r", json!(n)).await["epoch"].clone();
    }
    let gone = ws
        .request(json!({"type": "history", "channel": "room:r", "limit": 3,
                        "since": {"epoch": room_epoch, "offset": 1}}))
        .await;
    assert_eq!(gone["complete"], false, "{gone}");
    assert_eq!(gone["publications"].as_array().unwrap().len(), 0);
    let kept = ws
        .request(json!({"type": "history", "channel": "room:r", "limit": 3,
                        "since": {"epoch": room_epoch, "offset": 2}}))
        .await;
    assert_eq!(
        (kept["complete"].clone(), kept["more"].clone()),
        (json!(true), json!(true))
    );
}
