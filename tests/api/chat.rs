//! Collaboration chat: rooms, messages stored first and published through
//! the hook, history pages, typing, read markers, mentions, moderation,
//! the general room's system messages, tenant isolation and two nodes.

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};

use crate::helpers::*;

/// Creates (or opens) a room as `token`; returns it.
async fn room(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post("/api/v1/chat/rooms", Some(token), body).await;
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.unwrap()
}

/// The caller's rooms with unread counts.
async fn rooms(app: &TestApp, token: &str) -> Value {
    let res = app.get("/api/v1/chat/rooms", Some(token)).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn general(app: &TestApp, token: &str) -> String {
    rooms(app, token).await["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "general")
        .expect("a general room")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn history(app: &TestApp, token: &str, room: &str, query: &str) -> Value {
    let res = app
        .get(
            &format!("/api/v1/chat/rooms/{room}/messages{query}"),
            Some(token),
        )
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Sends a message over the socket; returns the reply frame.
async fn say(ws: &mut Ws, room: &str, text: &str) -> Value {
    ws.request(json!({"type": "publish", "channel": format!("chat:{room}"), "data": {"type": "message", "text": text}}))
        .await
}

/// Frames of `type` until one has `data.type` = `kind`.
async fn next_data(ws: &mut Ws, frame_type: &str, kind: &str) -> Value {
    loop {
        let frame = ws.recv().await;
        if frame["type"] == frame_type && frame["data"]["type"] == kind {
            return frame;
        }
    }
}

async fn group_of(app: &TestApp, admin_token: &str, members: &[&str]) -> String {
    let created = room(
        app,
        admin_token,
        json!({"kind": "group", "name": "Campagne été", "members": members}),
    )
    .await;
    assert_eq!(created["kind"], "group");
    created["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn concurrent_senders_are_stored_once_and_every_member_sees_one_order() {
    let app = spawn_app_with(&[("RELAIS_CHAT_MESSAGES_PER_SEC", "1000")]).await;
    let mut users = Vec::new();
    for name in ["ana", "bo", "cy", "di"] {
        users.push(app.user(&format!("{name}@example.com"), &["member"]).await);
    }
    let ids: Vec<&str> = users[1..].iter().map(|(id, _)| id.as_str()).collect();
    let room_id = group_of(&app, &users[0].1, &ids).await;
    let channel = format!("chat:{room_id}");
    let mut readers = Vec::new();
    for (_, token) in &users {
        let mut ws = app.ws_connected(token).await;
        ws.subscribe(&channel).await;
        readers.push(ws);
    }
    const PER_SENDER: usize = 15;
    let mut senders = Vec::new();
    for (_, token) in users.iter().take(3) {
        let mut ws = app.ws_connected(token).await;
        let room_id = room_id.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..PER_SENDER {
                let reply = say(&mut ws, &room_id, &format!("message {i}")).await;
                assert_eq!(reply["type"], "published", "{reply}");
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let total = 3 * PER_SENDER;
    let mut orders = Vec::new();
    for ws in &mut readers {
        let got = ws.publications(total).await;
        let offsets: Vec<u64> = got.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        let ids: Vec<String> = got
            .iter()
            .map(|p| p["data"]["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            total,
            "a duplicate"
        );
        orders.push(ids);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "members saw different orders"
    );
    // Stored first: the history has each message once, with dense sequence numbers.
    let page = history(&app, &users[3].1, &room_id, "?limit=200").await;
    let stored = page["messages"].as_array().unwrap();
    assert_eq!(stored.len(), total);
    let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    let stored_ids: HashSet<&str> = stored.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(stored_ids, orders[0].iter().map(String::as_str).collect());
}

#[tokio::test]
async fn history_pages_go_older_and_newer_and_backends_need_the_chat_scope() {
    let app = spawn_app().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let room_id = general(&app, &token).await;
    let key = app.api_key(&["chat"]).await;
    for i in 1..=25 {
        let res = app
            .post(
                &format!("/api/v1/chat/rooms/{room_id}/messages"),
                Some(&key),
                json!({"text": format!("note {i}")}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["author"], Value::Null);
    }
    let seqs = |page: &Value| -> Vec<i64> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect()
    };
    let newest = history(&app, &token, &room_id, "?limit=10").await;
    assert_eq!(seqs(&newest), (16..=25).collect::<Vec<_>>());
    assert_eq!(newest["has_more"], true);
    let older = history(&app, &token, &room_id, "?before=16&limit=10").await;
    assert_eq!(seqs(&older), (6..=15).collect::<Vec<_>>());
    let oldest = history(&app, &token, &room_id, "?before=6&limit=10").await;
    assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
    assert_eq!(oldest["has_more"], false);
    let newer = history(&app, &token, &room_id, "?after=20&limit=3").await;
    assert_eq!(seqs(&newer), vec![21, 22, 23]);
    assert_eq!(newer["has_more"], true);
    assert_eq!(newer["messages"][0]["text"], "note 21");

    let other_key = app.api_key(&["publish"]).await;
    let res = app
        .post(
            &format!("/api/v1/chat/rooms/{room_id}/messages"),
            Some(&other_key),
            json!({"text": "no scope"}),
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn typing_is_ephemeral_rate_limited_and_never_stored() {
    let app = spawn_app().await;
    let (_, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = app.user("bo@example.com", &["member"]).await;
    let room_id = group_of(&app, &ana_token, &[&bo]).await;
    let channel = format!("chat:{room_id}");
    let mut ana = app.ws_connected(&ana_token).await;
    ana.subscribe(&channel).await;
    let mut bo_ws = app.ws_connected(&bo_token).await;
    let reply = bo_ws
        .request(json!({"type": "publish", "channel": channel, "data": {"type": "typing"}}))
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["ephemeral"], true);
    let typing = next_data(&mut ana, "ephemeral", "typing").await;
    assert_eq!(typing["data"]["user"], bo.as_str());
    assert_eq!(typing["data"]["expires_in"], 5000);
    // A second indicator at once is refused.
    let again = bo_ws
        .request(json!({"type": "publish", "channel": channel, "data": {"type": "typing"}}))
        .await;
    assert_eq!(again["type"], "error");
    assert_eq!(again["code"], "typing_too_frequent");

    // Neither the store nor the channel's history kept it.
    assert!(say(&mut bo_ws, &room_id, "hello").await["offset"] == 1);
    let page = history(&app, &ana_token, &room_id, "").await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["text"], "hello");
    let replay = ana
        .request(json!({"type": "history", "channel": channel}))
        .await;
    let kinds: Vec<&Value> = replay["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["data"]["type"])
        .collect();
    assert_eq!(kinds, vec![&json!("message")], "{replay}");
}

#[tokio::test]
async fn read_markers_update_every_device_of_the_user() {
    let app = spawn_app().await;
    let (ana, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = app.user("bo@example.com", &["member"]).await;
    let direct = room(&app, &bo_token, json!({"kind": "direct", "user": ana})).await;
    let room_id = direct["id"].as_str().unwrap().to_owned();
    // One room per pair, whoever opens it.
    let again = room(&app, &ana_token, json!({"kind": "direct", "user": bo})).await;
    assert_eq!(again["id"], room_id.as_str());

    let mut phone = app.ws_connected(&ana_token).await;
    phone.subscribe(&format!("user:{ana}")).await;
    let mut laptop = app.ws_connected(&ana_token).await;
    laptop.subscribe(&format!("user:{ana}")).await;
    let mut bo_ws = app.ws_connected(&bo_token).await;
    for text in ["one", "two", "three"] {
        assert_eq!(say(&mut bo_ws, &room_id, text).await["type"], "published");
    }
    // New messages: both devices get the counts (coalesced) until all three show.
    for device in [&mut phone, &mut laptop] {
        loop {
            let event = next_data(device, "pub", "chat.unread_counts").await;
            let rooms = event["data"]["rooms"].as_array().unwrap().clone();
            assert_eq!(rooms[0]["room"], room_id.as_str());
            if rooms[0]["unread"] == 3 {
                assert_eq!(event["data"]["total"], 3);
                break;
            }
        }
    }
    let listed = rooms(&app, &ana_token).await;
    let entry = listed["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == room_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["unread"], 3);
    assert_eq!(listed["total_unread"], 3);
    // The author has nothing unread.
    assert_eq!(rooms(&app, &bo_token).await["total_unread"], 0);

    let result = phone
        .request(
            json!({"type": "rpc", "method": "chat.mark_read", "data": {"room": room_id, "seq": 2}}),
        )
        .await;
    assert_eq!(result["type"], "rpc_result", "{result}");
    assert_eq!(result["data"]["unread"], 1);
    for device in [&mut phone, &mut laptop] {
        let event = next_data(device, "pub", "chat.unread").await;
        assert_eq!(event["data"]["room"], room_id.as_str());
        assert_eq!(event["data"]["unread"], 1);
        assert_eq!(event["data"]["total"], 1);
    }
    // A marker never moves back.
    let back = laptop
        .request(
            json!({"type": "rpc", "method": "chat.mark_read", "data": {"room": room_id, "seq": 1}}),
        )
        .await;
    assert_eq!(back["data"]["unread"], 1);
    assert_eq!(rooms(&app, &ana_token).await["total_unread"], 1);
    // Someone else's room is not found.
    let (_, cy_token) = app.user("cy@example.com", &["member"]).await;
    let mut cy = app.ws_connected(&cy_token).await;
    let refused = cy
        .request(json!({"type": "rpc", "method": "chat.mark_read", "data": {"room": room_id}}))
        .await;
    assert_eq!(refused["code"], "room_not_found");
}

#[tokio::test]
async fn a_mention_notifies_through_the_inbox_and_falls_back_to_email() {
    let app = spawn_app_with(&[
        ("RELAIS_NOTIFY_POLL_SECS", "0.1"),
        ("RELAIS_EMAIL_RETRY_BASE_SECS", "0.2"),
    ])
    .await;
    let admin = app.admin_token().await;
    let (_, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = app.user("bo@example.com", &["member"]).await;
    let (cy, cy_token) = app.user("cy@example.com", &["member"]).await;
    let room_id = group_of(&app, &ana_token, &[&bo, &cy]).await;
    let mut ana_ws = app.ws_connected(&ana_token).await;
    let reply = say(&mut ana_ws, &room_id, "@bo can you check the spot?").await;
    assert_eq!(reply["type"], "published", "{reply}");
    let stored = history(&app, &bo_token, &room_id, "").await;
    assert_eq!(stored["messages"][0]["mentions"], json!([bo]));

    let inbox = |token: String| {
        let app = &app;
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let page: Value = app
                    .get("/api/v1/inbox", Some(&token))
                    .await
                    .json()
                    .await
                    .unwrap();
                if !page["items"].as_array().unwrap().is_empty() {
                    return page;
                }
                assert!(tokio::time::Instant::now() < deadline, "no notification");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let page = inbox(bo_token.clone()).await;
    let item = &page["items"][0];
    assert_eq!(item["type"], "chat.mention");
    assert!(
        item["title"].as_str().unwrap().contains("Campagne été"),
        "{item}"
    );
    // Neither the author nor an unmentioned member is notified.
    let page: Value = app
        .get("/api/v1/inbox", Some(&cy_token))
        .await
        .json()
        .await
        .unwrap();
    assert!(page["items"].as_array().unwrap().is_empty());

    // Unread after the fallback delay: an email goes.
    app.state.notify.clock.advance(Duration::from_secs(301));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page: Value = app
            .get("/api/v1/admin/emails?status=sent&limit=200", Some(&admin))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if let Some(email) = items.iter().find(|e| e["to"] == "bo@example.com") {
            assert_eq!(email["kind"], "fallback");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no fallback email");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // @room notifies every member but the author.
    let reply = say(&mut ana_ws, &room_id, "@room meeting at 3").await;
    assert_eq!(reply["type"], "published");
    let page = inbox(cy_token.clone()).await;
    assert_eq!(page["items"][0]["type"], "chat.mention");
    let page: Value = app
        .get("/api/v1/inbox", Some(&ana_token))
        .await
        .json()
        .await
        .unwrap();
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");
    let _ = cy;
}

#[tokio::test]
async fn rooms_of_one_tenant_are_invisible_to_another_and_project_rooms_follow_members() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (ana, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (_, cy_token) = app.user("cy@example.com", &["member"]).await;
    let room_id = general(&app, &ana_token).await;
    let mut ana_ws = app.ws_connected(&ana_token).await;
    say(&mut ana_ws, &room_id, "internal").await;

    let (_, out_token) = app.other_tenant_admin().await;
    let mut out = app.ws_connected(&out_token).await;
    let refused = out
        .request(json!({"type": "subscribe", "channel": format!("chat:{room_id}")}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let res = app
        .get(
            &format!("/api/v1/chat/rooms/{room_id}/messages"),
            Some(&out_token),
        )
        .await;
    assert_eq!(res.status(), 404);
    let theirs = rooms(&app, &out_token).await;
    assert!(
        theirs["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"] != room_id.as_str())
    );
    let their_general = general(&app, &out_token).await;
    assert_ne!(their_general, room_id);
    assert!(
        history(&app, &out_token, &their_general, "").await["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A project's room: its members in, others out.
    let res = app
        .post(
            "/api/v1/projects",
            Some(&admin),
            json!({"name": "Offre fibre", "members": [{"user_id": ana}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let project: Value = res.json().await.unwrap();
    let project_room = room(
        &app,
        &ana_token,
        json!({"kind": "project", "project": project["id"]}),
    )
    .await;
    assert_eq!(project_room["name"], "Offre fibre");
    let channel = format!("chat:{}", project_room["id"].as_str().unwrap());
    ana_ws.subscribe(&channel).await;
    let mut cy = app.ws_connected(&cy_token).await;
    let refused = cy
        .request(json!({"type": "subscribe", "channel": channel}))
        .await;
    assert_eq!(refused["code"], "forbidden");
}

#[tokio::test]
async fn muted_users_and_fast_senders_are_refused_with_their_codes() {
    let app = spawn_app_with(&[("RELAIS_CHAT_MESSAGES_PER_SEC", "1")]).await;
    let (_, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = app.user("bo@example.com", &["member"]).await;
    let room_id = group_of(&app, &ana_token, &[&bo]).await;
    let mut bo_ws = app.ws_connected(&bo_token).await;
    // A burst of twice the rate, then refused.
    assert_eq!(say(&mut bo_ws, &room_id, "1").await["type"], "published");
    assert_eq!(say(&mut bo_ws, &room_id, "2").await["type"], "published");
    let refused = say(&mut bo_ws, &room_id, "3").await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "message_rate_limited");

    // Bo may not mute; the room's admin may.
    let res = app
        .post(
            &format!("/api/v1/chat/rooms/{room_id}/mutes"),
            Some(&bo_token),
            json!({"user": bo, "muted": true}),
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .post(
            &format!("/api/v1/chat/rooms/{room_id}/mutes"),
            Some(&ana_token),
            json!({"user": bo, "muted": true}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let refused = say(&mut bo_ws, &room_id, "still here?").await;
    assert_eq!(refused["code"], "muted", "{refused}");
    let res = app
        .post(
            &format!("/api/v1/chat/rooms/{room_id}/messages"),
            Some(&bo_token),
            json!({"text": "over REST"}),
        )
        .await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "muted");
    // Too long is refused too, with its code.
    let res = app
        .post(
            &format!("/api/v1/chat/rooms/{room_id}/messages"),
            Some(&ana_token),
            json!({"text": "x".repeat(4001)}),
        )
        .await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "message_too_long");
}

#[tokio::test]
async fn edits_deletes_and_replies_reach_members_live_and_leave_tombstones() {
    let app = spawn_app().await;
    let (_, ana_token) = app.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = app.user("bo@example.com", &["member"]).await;
    let (cy, cy_token) = app.user("cy@example.com", &["member"]).await;
    let (_, mod_token) = app.user("mo@example.com", &["moderator"]).await;
    let room_id = group_of(&app, &ana_token, &[&bo, &cy]).await;
    // A moderator joins the open group room; members see it as a system message.
    let mut cy_ws = app.ws_connected(&cy_token).await;
    cy_ws.subscribe(&format!("chat:{room_id}")).await;
    let res = app
        .post(
            &format!("/api/v1/chat/rooms/{room_id}/join"),
            Some(&mod_token),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let joined = next_data(&mut cy_ws, "pub", "system").await;
    assert_eq!(joined["data"]["event"], "joined");

    let mut bo_ws = app.ws_connected(&bo_token).await;
    let first = say(&mut bo_ws, &room_id, "first draft").await;
    assert_eq!(first["type"], "published");
    let message = next_data(&mut cy_ws, "pub", "message").await["data"].clone();
    let id = message["id"].as_str().unwrap().to_owned();
    let reply = bo_ws
        .request(json!({"type": "publish", "channel": format!("chat:{room_id}"), "data": {"type": "message", "text": "a reply", "reply_to": id}}))
        .await;
    assert_eq!(reply["type"], "published");
    let got = next_data(&mut cy_ws, "pub", "message").await;
    assert_eq!(got["data"]["reply_to"], id.as_str());

    let url = format!("/api/v1/chat/rooms/{room_id}/messages/{id}");
    let res = app
        .http
        .patch(app.url(&url))
        .bearer_auth(&bo_token)
        .json(&json!({"text": "final text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let edited = next_data(&mut cy_ws, "pub", "message.edited").await;
    assert_eq!(edited["data"]["text"], "final text");
    // Cy is neither the author nor an admin of the room.
    let res = app
        .http
        .delete(app.url(&url))
        .bearer_auth(&cy_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = app
        .http
        .delete(app.url(&url))
        .bearer_auth(&mod_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let deleted = next_data(&mut cy_ws, "pub", "message.deleted").await;
    assert_eq!(deleted["data"]["id"], id.as_str());
    let page = history(&app, &cy_token, &room_id, "").await;
    let tombstone = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(tombstone["text"], "");
    assert!(tombstone["deleted_at"].is_i64());
    let _ = cy;
}

#[tokio::test]
async fn the_general_room_announces_connections_and_a_reload_is_not_a_leave() {
    let app = spawn_app_with(&[("RELAIS_CHAT_DISCONNECT_DELAY_SECS", "1.5")]).await;
    let (_, watcher_token) = app.user("watch@example.com", &["member"]).await;
    let (bo, bo_token) = app.user("bo@example.com", &["member"]).await;
    let room_id = general(&app, &watcher_token).await;
    let channel = format!("chat:{room_id}");
    let mut watcher = app.ws_connected(&watcher_token).await;
    watcher.subscribe(&channel).await;

    // Bo's system messages and Bo's own messages, in the order members see them.
    let system_about = |frame: &Value| {
        frame["data"]["user"] == bo.as_str() || frame["data"]["author"] == bo.as_str()
    };
    let next_about_bo = async |ws: &mut Ws| loop {
        let frame = ws.recv().await;
        if frame["type"] == "pub" && system_about(&frame) {
            return frame;
        }
    };

    let mut bo_ws = app.ws_connected(&bo_token).await;
    bo_ws.subscribe(&channel).await;
    let connected = next_about_bo(&mut watcher).await;
    assert_eq!(connected["data"]["event"], "connected");
    // A reload: the connection closes and another opens within the delay.
    drop(bo_ws);
    let mut bo_ws = app.ws_connected(&bo_token).await;
    bo_ws.subscribe(&channel).await;
    assert_eq!(say(&mut bo_ws, &room_id, "back").await["type"], "published");
    let back = next_about_bo(&mut watcher).await;
    assert_eq!(
        back["data"]["text"], "back",
        "the reload was announced: {back}"
    );
    // Then Bo really leaves.
    drop(bo_ws);
    let next = next_about_bo(&mut watcher).await;
    assert_eq!(next["data"]["event"], "disconnected", "{next}");
    let page = history(&app, &watcher_token, &room_id, "").await;
    let events: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["user"] == bo.as_str())
        .map(|m| &m["event"])
        .collect();
    assert_eq!(events, vec!["connected", "disconnected"]);
}

#[tokio::test]
async fn messages_sent_on_two_nodes_reach_members_on_both_in_one_order() {
    let first = first_cluster_node().await;
    let second = first.spawn_peer().await;
    let (ana, ana_token) = first.user("ana@example.com", &["member"]).await;
    let (bo, bo_token) = first.user("bo@example.com", &["member"]).await;
    let room_id = group_of(&first, &ana_token, &[&bo]).await;
    let channel = format!("chat:{room_id}");
    let mut on_first = first.ws_connected(&bo_token).await;
    on_first.subscribe(&channel).await;
    let mut on_second = second.ws_connected(&ana_token).await;
    on_second.subscribe(&channel).await;

    let mut sender_a = first.ws_connected(&ana_token).await;
    let mut sender_b = second.ws_connected(&bo_token).await;
    const EACH: usize = 10;
    let (room_a, room_b) = (room_id.clone(), room_id.clone());
    let a = tokio::spawn(async move {
        for i in 0..EACH {
            assert_eq!(
                say(&mut sender_a, &room_a, &format!("a{i}")).await["type"],
                "published"
            );
        }
    });
    let b = tokio::spawn(async move {
        for i in 0..EACH {
            assert_eq!(
                say(&mut sender_b, &room_b, &format!("b{i}")).await["type"],
                "published"
            );
        }
    });
    a.await.unwrap();
    b.await.unwrap();
    let ids = |got: Vec<Value>| -> Vec<String> {
        got.iter()
            .map(|p| p["data"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let seen_first = ids(on_first.publications(2 * EACH).await);
    let seen_second = ids(on_second.publications(2 * EACH).await);
    assert_eq!(seen_first, seen_second);
    assert_eq!(seen_first.iter().collect::<HashSet<_>>().len(), 2 * EACH);
    let page = history(&second, &ana_token, &room_id, "?limit=100").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 2 * EACH);
    let _ = ana;
}

#[tokio::test]
async fn retention_purges_old_messages_of_the_tenant_that_set_it() {
    let app = spawn_app_with(&[("RELAIS_CHAT_PURGE_INTERVAL_SECS", "0.1")]).await;
    let admin = app.admin_token().await;
    let (_, token) = app.user("ana@example.com", &["member"]).await;
    let room_id = general(&app, &token).await;
    let mut ws = app.ws_connected(&token).await;
    for text in ["old", "recent"] {
        assert_eq!(say(&mut ws, &room_id, text).await["type"], "published");
    }
    // Age the first message by 40 days.
    sqlx::query("UPDATE chat_messages SET created_at = created_at - $1 WHERE text = 'old'")
        .bind(40i64 * 86_400_000)
        .execute(&app.state.store.pool)
        .await
        .unwrap();
    // Members may not set retention; tenant admins may.
    let put = |bearer: String, body: Value| {
        let app = &app;
        async move {
            app.http
                .put(app.url("/api/v1/chat/settings"))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        put(token.clone(), json!({"retention_days": 30}))
            .await
            .status(),
        403
    );
    assert_eq!(
        put(admin.clone(), json!({"retention_days": 0}))
            .await
            .status(),
        422
    );
    assert_eq!(
        put(admin.clone(), json!({"retention_days": 30}))
            .await
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = history(&app, &token, &room_id, "").await;
        let texts: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "message")
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        if texts == ["recent"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not purged: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settings: Value = app
        .get("/api/v1/chat/settings", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settings["retention_days"], 30);
}

/// Creates a user with a display name; returns (user id, access token).
async fn named_user(app: &TestApp, email: &str, name: &str) -> (String, String) {
    let admin = app.admin_token().await;
    let res = app
        .post(
            "/api/v1/admin/users",
            Some(&admin),
            json!({"email": email, "display_name": name, "password": "user-password-123", "roles": ["member"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    let login = app.login(email, "user-password-123").await;
    (
        user["id"].as_str().unwrap().to_owned(),
        login["access_token"].as_str().unwrap().to_owned(),
    )
}

/// `GET …/members` as `token`: (status, body).
async fn members(app: &TestApp, token: &str, room: &str, query: &str) -> (u16, Value) {
    let res = app
        .get(
            &format!("/api/v1/chat/rooms/{room}/members{query}"),
            Some(token),
        )
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// The (id, display name, role) of each member of a page, in its order.
fn listed(page: &Value) -> Vec<(String, String, Option<String>)> {
    page["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let fields: HashSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
            assert!(
                fields.is_subset(&HashSet::from(["id", "display_name", "role"])),
                "only ids, names and roles: {m}"
            );
            (
                m["id"].as_str().unwrap().to_owned(),
                m["display_name"].as_str().unwrap().to_owned(),
                m["role"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn members_of_a_group_room_learn_each_others_names_and_no_one_elses() {
    let app = spawn_app().await;
    let (ana, ana_token) = named_user(&app, "ana@example.com", "Ana Lima").await;
    let (bo, bo_token) = named_user(&app, "bo@example.com", "Bo Rivière").await;
    // No name of their own: shown by the email's local part, never the address.
    let (cy, _) = app.user("cy@example.com", &["member"]).await;
    let (_, out_token) = named_user(&app, "out@example.com", "Outsider").await;
    let room_id = group_of(&app, &ana_token, &[&bo, &cy]).await;

    let (status, page) = members(&app, &bo_token, &room_id, "").await;
    assert_eq!(status, 200, "{page}");
    let mut expected = vec![
        (ana.clone(), "Ana Lima".to_owned(), Some("admin".to_owned())),
        (
            bo.clone(),
            "Bo Rivière".to_owned(),
            Some("member".to_owned()),
        ),
        (cy.clone(), "cy".to_owned(), Some("member".to_owned())),
    ];
    expected.sort();
    assert_eq!(listed(&page), expected);
    assert!(page.get("next_after").is_none(), "{page}");
    assert!(!page.to_string().contains("example.com"), "{page}");

    // A non-member is told the room does not exist, as for its history.
    let (status, body) = members(&app, &out_token, &room_id, "").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "room_not_found");
    let (status, _) = members(&app, &ana_token, "no-such-room", "").await;
    assert_eq!(status, 404);
    // A backend with the chat scope reads it; one without is refused.
    let (status, page) = members(&app, &app.api_key(&["chat"]).await, &room_id, "").await;
    assert_eq!(status, 200);
    assert_eq!(listed(&page).len(), 3);
    let (status, body) = members(&app, &app.api_key(&["publish"]).await, &room_id, "").await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    // One who leaves drops out of the list.
    let res = app
        .post(
            &format!("/api/v1/chat/rooms/{room_id}/leave"),
            Some(&bo_token),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let (_, page) = members(&app, &ana_token, &room_id, "").await;
    let ids: Vec<String> = listed(&page).into_iter().map(|(id, _, _)| id).collect();
    assert!(
        ids.contains(&ana) && ids.contains(&cy) && !ids.contains(&bo),
        "{page}"
    );

    // A direct room: the pair, with no roles.
    let direct = room(&app, &ana_token, json!({"kind": "direct", "user": cy})).await;
    let (_, page) = members(&app, &ana_token, direct["id"].as_str().unwrap(), "").await;
    let mut pair = vec![
        (ana.clone(), "Ana Lima".to_owned(), None),
        (cy.clone(), "cy".to_owned(), None),
    ];
    pair.sort();
    assert_eq!(listed(&page), pair);

    // A project's room: the project's members.
    let admin = app.admin_token().await;
    let res = app
        .post(
            "/api/v1/projects",
            Some(&admin),
            json!({"name": "Offre fibre", "members": [{"user_id": ana}, {"user_id": bo}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let project: Value = res.json().await.unwrap();
    let project_room = room(
        &app,
        &ana_token,
        json!({"kind": "project", "project": project["id"]}),
    )
    .await;
    let project_room = project_room["id"].as_str().unwrap();
    let (_, page) = members(&app, &bo_token, project_room, "").await;
    let mut both = vec![
        (ana.clone(), "Ana Lima".to_owned(), None),
        (bo.clone(), "Bo Rivière".to_owned(), None),
    ];
    both.sort();
    assert_eq!(listed(&page), both);
    let (status, _) = members(&app, &out_token, project_room, "").await;
    assert_eq!(status, 404);

    let doc = app.openapi().await;
    assert!(doc["paths"]["/api/v1/chat/rooms/{room}/members"]["get"].is_object());
}

#[tokio::test]
async fn the_general_rooms_members_are_the_active_users_paged_in_id_order() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut users = Vec::new();
    for name in ["Ana", "Bo", "Cy", "Di", "Ed"] {
        let email = format!("{}@example.com", name.to_lowercase());
        users.push(named_user(&app, &email, name).await);
    }
    let (gone, _) = named_user(&app, "gone@example.com", "Gone").await;
    let res = app
        .patch(
            &format!("/api/v1/admin/users/{gone}"),
            &admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let token = &users[0].1;
    let room_id = general(&app, token).await;

    // Pages of two, following next_after until it is absent.
    let mut all = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = members(&app, token, &room_id, &query).await;
        assert_eq!(status, 200, "{page}");
        let got = listed(&page);
        assert!(got.len() <= 2);
        pages += 1;
        all.extend(got);
        match page["next_after"].as_str() {
            Some(after) => {
                assert_eq!(after, all.last().unwrap().0);
                query = format!("?limit=2&after={after}");
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    // Five users and the tenant's admin, the disabled user left out.
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(pages, 3);
    let ids: Vec<&str> = all.iter().map(|(id, _, _)| id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "id order");
    assert!(!ids.contains(&gone.as_str()));
    for (id, _) in &users {
        assert!(ids.contains(&id.as_str()));
    }
    let names: HashSet<&str> = all.iter().map(|(_, n, _)| n.as_str()).collect();
    assert!(
        ["Ana", "Bo", "Cy", "Di", "Ed", "Administrator"]
            .iter()
            .all(|n| names.contains(n)),
        "{names:?}"
    );
    assert!(all.iter().all(|(_, _, role)| role.is_none()));
    // One page of everyone by default.
    let (_, page) = members(&app, token, &room_id, "").await;
    assert_eq!(listed(&page), all);
    assert!(page.get("next_after").is_none());
    // A bad limit is a typed error; an out-of-range one is clamped.
    let (status, body) = members(&app, token, &room_id, "?limit=many").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query");
    let (status, page) = members(&app, token, &room_id, "?limit=0").await;
    assert_eq!(status, 200);
    assert_eq!(listed(&page).len(), 1);
}
