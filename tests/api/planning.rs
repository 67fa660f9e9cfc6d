//! Broadcast planning over the real REST API and WebSocket: the overlap rule
//! under concurrent writers, versions, day plans, broadcasters' actions and
//! the advertiser's notifications, the live channel (snapshot, changes,
//! recovery across a node restart) and the exports.

use std::collections::HashMap;

use icalendar::Component;
use serde_json::{Value, json};

use crate::helpers::{NodeProcess, TestApp, WAIT, first_cluster_node, spawn_app};

/// A day far from today, so that nothing else in a test falls on it.
const DAY: &str = "2030-01-10";
/// 00:00 on [`DAY`] in UTC, in milliseconds.
const DAY_MS: i64 = 1_894_233_600_000;

fn at(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

async fn station(app: &TestApp, token: &str, name: &str, time_zone: &str) -> Value {
    let res = app
        .post(
            "/api/v1/stations",
            Some(token),
            json!({"name": name, "time_zone": time_zone}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

async fn create_slot(app: &TestApp, token: &str, station: &str, body: Value) -> reqwest::Response {
    app.post(
        &format!("/api/v1/stations/{station}/slots"),
        Some(token),
        body,
    )
    .await
}

async fn slot(app: &TestApp, token: &str, station: &str, body: Value) -> Value {
    let res = create_slot(app, token, station, body).await;
    let status = res.status();
    let value: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{value}");
    value
}

async fn patch(
    app: &TestApp,
    token: &str,
    path: &str,
    if_match: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = app.http.patch(app.url(path)).bearer_auth(token).json(&body);
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    req.send().await.unwrap()
}

async fn list(app: &TestApp, token: &str, station: &str, query: &str) -> Vec<Value> {
    let res = app
        .get(
            &format!("/api/v1/stations/{station}/slots?{query}"),
            Some(token),
        )
        .await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    page["items"].as_array().unwrap().clone()
}

fn day_window() -> String {
    format!(
        "from={}&to={}",
        at(DAY_MS - 86_400_000),
        at(DAY_MS + 2 * 86_400_000)
    )
}

async fn error(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    body["error"].clone()
}

#[tokio::test]
async fn concurrent_writers_never_make_two_slots_of_a_station_overlap() {
    let app = spawn_app().await;
    let key = app.api_key(&["planning"]).await;
    let st = station(&app, &key, "Radio Concurrence", "Europe/Paris").await;
    // 50 positions of a minute; at each, a one-minute slot and a
    // half-minute one in its second half: they overlap each other and
    // nothing else, so exactly one of each pair can be stored.
    let mut tasks = Vec::new();
    for n in 0..100i64 {
        let (start, duration) = if n % 2 == 0 {
            (DAY_MS + (n / 2) * 60_000, 60)
        } else {
            (DAY_MS + (n / 2) * 60_000 + 30_000, 30)
        };
        let http = app.http.clone();
        let url = app.url(&format!("/api/v1/stations/{}/slots", id(&st)));
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"starts_at": at(start), "duration": duration, "spot_ref": format!("spot-{n}")}))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (n, status, body)
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        let (n, status, body) = task.await.unwrap();
        match status {
            201 => won.push(n / 2),
            409 => assert_eq!(body["error"]["code"], "slot_overlap", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    won.sort();
    assert_eq!(won, (0..50).collect::<Vec<_>>(), "one slot per position");

    let stored = list(&app, &key, id(&st), &day_window()).await;
    assert_eq!(stored.len(), 50);
    let bounds: Vec<(jiff::Timestamp, jiff::Timestamp)> = stored
        .iter()
        .map(|s| {
            (
                s["starts_at"].as_str().unwrap().parse().unwrap(),
                s["ends_at"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    for pair in bounds.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "stored slots overlap: {pair:?}");
    }

    // A refused write names the slot it collides with: 40 s into the first
    // minute lies in whichever of its two slots won.
    let res = create_slot(
        &app,
        &key,
        id(&st),
        json!({"starts_at": at(DAY_MS + 40_000), "duration": 5}),
    )
    .await;
    let err = error(res, 409).await;
    assert_eq!(err["code"], "slot_overlap");
    assert_eq!(err["conflicting_slot"]["id"], stored[0]["id"]);
}

#[tokio::test]
async fn a_change_applies_only_to_the_version_it_was_based_on() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let st = station(&app, &token, "Radio Version", "Europe/Paris").await;
    let s = slot(
        &app,
        &token,
        id(&st),
        json!({"starts_at": "2030-01-10T08:00:00+01:00", "duration": 30, "title": "Morning"}),
    )
    .await;
    assert_eq!(s["version"], 1);
    assert_eq!(s["status"], "planned");
    assert_eq!(s["starts_at"], "2030-01-10T07:00:00Z");
    let path = format!("/api/v1/slots/{}", id(&s));

    let res = app.get(&path, Some(&token)).await;
    assert_eq!(res.headers()["etag"], "\"1\"");

    // No version at all: the change is refused, not applied blindly.
    let res = patch(&app, &token, &path, None, json!({"notes": "x"})).await;
    assert_eq!(error(res, 428).await["code"], "precondition_required");

    // A stale version: 412 with the current one.
    let res = patch(&app, &token, &path, Some("\"0\""), json!({"notes": "x"})).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    let err = error(res, 412).await;
    assert_eq!(err["code"], "version_mismatch");
    assert_eq!(err["current_version"], 1);

    // The right one: applied, version + 1.
    let res = patch(
        &app,
        &token,
        &path,
        Some("\"1\""),
        json!({"notes": "moved"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["notes"], "moved");
    assert_eq!(body["title"], "Morning");

    // The same stale request again loses; `version` in the body works too.
    let res = patch(
        &app,
        &token,
        &path,
        Some("\"1\""),
        json!({"notes": "again"}),
    )
    .await;
    assert_eq!(error(res, 412).await["current_version"], 2);
    let res = patch(
        &app,
        &token,
        &path,
        None,
        json!({"version": 2, "starts_at": "2030-01-10T09:00:00+01:00", "duration": 60, "title": null}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], 3);
    assert_eq!(body["ends_at"], "2030-01-10T08:01:00Z");
    assert_eq!(body["title"], Value::Null);

    // `If-Match: *`: whatever the current version is.
    let res = patch(&app, &token, &path, Some("*"), json!({"notes": "any"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"4\"");

    // Validation and transitions.
    let res = patch(&app, &token, &path, Some("\"4\""), json!({"duration": 0})).await;
    assert_eq!(error(res, 422).await["code"], "invalid_slot");
    let res = app
        .post(
            &format!("{path}/cancel"),
            Some(&token),
            json!({"reason": "sold out"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = patch(&app, &token, &path, Some("\"5\""), json!({"notes": "y"})).await;
    assert_eq!(error(res, 409).await["code"], "invalid_transition");
}

#[tokio::test]
async fn a_day_plan_is_written_whole_or_not_at_all_with_every_refused_row() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let st = station(&app, &token, "Radio Plan", "Europe/Paris").await;
    let existing = slot(
        &app,
        &token,
        id(&st),
        json!({"starts_at": "2030-01-10T09:00:00+01:00", "duration": 60}),
    )
    .await;
    let plan = format!("/api/v1/stations/{}/plan", id(&st));

    let res = app
        .post(
            &plan,
            Some(&token),
            json!({"date": DAY, "slots": [
                {"time": "08:00", "duration": 60, "spot_ref": "a"},
                {"time": "08:00:30", "duration": 60, "spot_ref": "b"},
                {"starts_at": "2030-01-10T09:00:30+01:00", "duration": 10},
                {"time": "10:00", "duration": 0},
                {"starts_at": "2030-01-11T10:00:00+01:00", "duration": 10},
                {"time": "11:00", "duration": 10, "advertiser_user": "nobody"},
                {"time": "12:00", "duration": 10},
            ]}),
        )
        .await;
    let err = error(res, 422).await;
    assert_eq!(err["code"], "import_failed");
    let rows: Vec<(u64, &str)> = err["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (2, "slot_overlap"),
            (3, "slot_overlap"),
            (4, "invalid_slot"),
            (5, "invalid_slot"),
            (6, "invalid_slot"),
        ],
        "{err}"
    );
    assert_eq!(err["errors"][0]["conflicts_with"], "row:1");
    assert_eq!(err["errors"][1]["conflicts_with"], existing["id"]);
    // Nothing was written.
    let stored = list(&app, &token, id(&st), &day_window()).await;
    assert_eq!(stored.len(), 1);

    // A valid plan is written whole.
    let res = app
        .post(
            &plan,
            Some(&token),
            json!({"date": DAY, "slots": [
                {"time": "08:00", "duration": 60, "spot_ref": "a"},
                {"time": "08:01", "duration": 60, "spot_ref": "b"},
                {"time": "23:59:30", "duration": 30, "spot_ref": "c"},
            ]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let written: Value = res.json().await.unwrap();
    assert_eq!(written["created"], 3);
    assert_eq!(written["slots"][0]["starts_at"], "2030-01-10T07:00:00Z");
    assert_eq!(list(&app, &token, id(&st), &day_window()).await.len(), 4);

    // `replace` cancels the day's planned slots first.
    let res = app
        .post(
            &plan,
            Some(&token),
            json!({"date": DAY, "replace": true, "slots": [{"time": "08:00", "duration": 30}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let written: Value = res.json().await.unwrap();
    assert_eq!(
        (written["created"].clone(), written["cancelled"].clone()),
        (json!(1), json!(4))
    );
    let live = list(
        &app,
        &token,
        id(&st),
        &format!("{}&status=planned,confirmed", day_window()),
    )
    .await;
    assert_eq!(live.len(), 1);
}

/// Waits until `token`'s inbox holds `n` notifications; returns them.
async fn inbox_items(app: &TestApp, token: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page: Value = app
            .get("/api/v1/inbox?limit=100", Some(token))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap().clone();
        if items.len() >= n {
            return items;
        }
        assert!(tokio::time::Instant::now() < deadline, "inbox: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn broadcasters_confirm_air_and_cancel_and_the_advertiser_is_told() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let (_, broadcaster) = app.user("onair@example.com", &["broadcaster"]).await;
    let (advertiser_id, advertiser) = app.user("brand@example.com", &["client"]).await;
    let st = station(&app, &token, "Radio Antenne", "Europe/Paris").await;
    let first = slot(
        &app,
        &token,
        id(&st),
        json!({"starts_at": "2030-01-10T08:00:00+01:00", "duration": 30, "title": "Soldes d'hiver", "advertiser_user": advertiser_id}),
    )
    .await;
    let second = slot(
        &app,
        &token,
        id(&st),
        json!({"starts_at": "2030-01-10T08:10:00+01:00", "duration": 30, "spot_ref": "SPOT-2", "advertiser_user": advertiser_id}),
    )
    .await;
    let action = |s: &Value, what: &str| format!("/api/v1/slots/{}/{what}", id(s));

    // Advertisers neither act nor read the planning.
    let res = app
        .post(&action(&first, "confirm"), Some(&advertiser), json!({}))
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .get(&format!("/api/v1/stations/{}", id(&st)), Some(&advertiser))
        .await;
    assert_eq!(res.status(), 403);
    // Broadcasters do not plan.
    let res = create_slot(
        &app,
        &broadcaster,
        id(&st),
        json!({"starts_at": at(DAY_MS), "duration": 5}),
    )
    .await;
    assert_eq!(res.status(), 403);

    // Airing before confirming is not a transition.
    let res = app
        .post(&action(&first, "aired"), Some(&broadcaster), json!({}))
        .await;
    assert_eq!(error(res, 409).await["code"], "invalid_transition");

    let res = app
        .post(&action(&first, "confirm"), Some(&broadcaster), json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let confirmed: Value = res.json().await.unwrap();
    assert_eq!(
        (confirmed["status"].clone(), confirmed["version"].clone()),
        (json!("confirmed"), json!(2))
    );

    let res = app
        .post(
            &action(&first, "aired"),
            Some(&broadcaster),
            json!({"aired_at": "2030-01-10T08:00:02+01:00"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let aired: Value = res.json().await.unwrap();
    assert_eq!(aired["status"], "aired");
    assert_eq!(aired["aired_at"], "2030-01-10T07:00:02Z");

    // A reason is required to cancel.
    let res = app
        .post(&action(&second, "cancel"), Some(&broadcaster), json!({}))
        .await;
    assert_eq!(error(res, 422).await["code"], "invalid_slot");
    let res = app
        .post(
            &action(&second, "cancel"),
            Some(&broadcaster),
            json!({"reason": "Grille modifiée"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let cancelled: Value = res.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancel_reason"], "Grille modifiée");
    // No un-cancelling.
    let res = app
        .post(&action(&second, "confirm"), Some(&broadcaster), json!({}))
        .await;
    assert_eq!(error(res, 409).await["code"], "invalid_transition");

    let items = inbox_items(&app, &advertiser, 3).await;
    let mut types: Vec<&str> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(
        types,
        vec!["slot.cancelled", "slot.confirmed", "spot.aired"]
    );
    let cancel = items
        .iter()
        .find(|i| i["type"] == "slot.cancelled")
        .unwrap();
    let text = cancel.to_string();
    assert!(text.contains("Grille modifiée"), "{cancel}");
    assert!(text.contains("Radio Antenne"), "{cancel}");
    // The time is the station's: 08:10 in Paris.
    assert!(text.contains("2030-01-10 08:10"), "{cancel}");
    let confirm = items
        .iter()
        .find(|i| i["type"] == "slot.confirmed")
        .unwrap();
    assert!(confirm.to_string().contains("Soldes d'hiver"), "{confirm}");
}

/// The slots a console holds: by id, the highest version seen.
fn apply(view: &mut HashMap<String, Value>, slot: &Value) {
    let key = id(slot).to_owned();
    let newer = view
        .get(&key)
        .is_none_or(|held| held["version"].as_i64() < slot["version"].as_i64());
    if newer {
        view.insert(key, slot.clone());
    }
}

#[tokio::test]
async fn a_snapshot_and_the_changes_after_it_make_the_stored_planning() {
    let app = spawn_app().await;
    let key = app.api_key(&["planning"]).await;
    let (_, broadcaster) = app.user("console@example.com", &["broadcaster"]).await;
    let st = station(&app, &key, "Radio Live", "Europe/Paris").await;
    let station_id = id(&st).to_owned();

    // A writer creates and edits slots while the console subscribes.
    let (started, mut started_rx) = tokio::sync::mpsc::channel::<()>(1);
    let writer = {
        let http = app.http.clone();
        let base = app.url("");
        let key = key.clone();
        let station_id = station_id.clone();
        tokio::spawn(async move {
            for n in 0..40i64 {
                let res = http
                    .post(format!("{base}/api/v1/stations/{station_id}/slots"))
                    .bearer_auth(&key)
                    .json(&json!({"starts_at": at(DAY_MS + n * 60_000), "duration": 30}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
                let s: Value = res.json().await.unwrap();
                let res = http
                    .patch(format!("{base}/api/v1/slots/{}", id(&s)))
                    .bearer_auth(&key)
                    .header("if-match", "\"1\"")
                    .json(&json!({"notes": format!("edited {n}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                if n == 5 {
                    let _ = started.send(()).await;
                }
            }
        })
    };
    started_rx.recv().await;
    let mut ws = app.ws_connected(&broadcaster).await;
    let channel = format!("planning:{station_id}");
    let reply = ws
        .request(json!({"type": "subscribe", "channel": channel, "params": {"from": at(DAY_MS), "to": at(DAY_MS + 86_400_000)}}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let snapshot = &reply["snapshot"];
    assert_eq!(snapshot["station"]["id"], station_id.as_str());
    let mut view = HashMap::new();
    for s in snapshot["slots"].as_array().unwrap() {
        apply(&mut view, s);
    }
    writer.await.unwrap();
    // A last change marks the end of the stream to read.
    let marker = slot(
        &app,
        &key,
        &station_id,
        json!({"starts_at": at(DAY_MS + 80_000_000), "duration": 1}),
    )
    .await;

    let mut offset = reply["offset"].as_u64().unwrap();
    loop {
        let frame = ws.recv().await;
        if frame["type"] != "pub" {
            continue;
        }
        let next = frame["offset"].as_u64().unwrap();
        assert_eq!(next, offset + 1, "a gap or a duplicate in the stream");
        offset = next;
        apply(&mut view, &frame["data"]["slot"]);
        if frame["data"]["slot"]["id"] == marker["id"] {
            break;
        }
    }
    let stored = list(&app, &key, &station_id, &day_window()).await;
    let mut held: Vec<(String, i64, String)> = view
        .values()
        .map(|s| {
            (
                id(s).to_owned(),
                s["version"].as_i64().unwrap(),
                s["notes"].to_string(),
            )
        })
        .collect();
    held.sort();
    let mut expected: Vec<(String, i64, String)> = stored
        .iter()
        .map(|s| {
            (
                id(s).to_owned(),
                s["version"].as_i64().unwrap(),
                s["notes"].to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(held.len(), 41);
    assert_eq!(held, expected);

    // Only broadcasters and planners follow a station.
    let (_, client) = app.user("viewer@example.com", &["client"]).await;
    let mut other = app.ws_connected(&client).await;
    let reply = other
        .request(json!({"type": "subscribe", "channel": channel}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    // A channel of no station is refused by its snapshot.
    let reply = ws
        .request(json!({"type": "subscribe", "channel": "planning:nope"}))
        .await;
    assert_eq!(reply["code"], "not_found", "{reply}");
}

#[tokio::test]
async fn a_console_recovers_the_changes_it_missed_while_its_node_restarted() {
    let a = first_cluster_node().await;
    let token = a.admin_token().await;
    let st = station(&a, &token, "Radio Cluster", "Europe/Paris").await;
    let channel = format!("planning:{}", id(&st));
    let mut b = NodeProcess::start(a.env());
    let mut ws = b.ws_connected(&token).await;
    let reply = ws
        .request(json!({"type": "subscribe", "channel": channel}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");

    let first = slot(
        &a,
        &token,
        id(&st),
        json!({"starts_at": at(DAY_MS), "duration": 30}),
    )
    .await;
    let seen = ws.publications(1).await;
    assert_eq!(seen[0]["data"]["slot"]["id"], first["id"]);
    let last = seen[0].clone();

    // The node goes away; the planning keeps changing through another.
    b.terminate();
    let second = slot(
        &a,
        &token,
        id(&st),
        json!({"starts_at": at(DAY_MS + 60_000), "duration": 30}),
    )
    .await;
    let res = patch(
        &a,
        &token,
        &format!("/api/v1/slots/{}", id(&first)),
        Some("\"1\""),
        json!({"starts_at": at(DAY_MS + 120_000)}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = a
        .post(
            &format!("/api/v1/slots/{}/confirm", id(&second)),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let b = NodeProcess::start(a.env());
    let mut ws = b.ws_connected(&token).await;
    let reply = ws
        .request(json!({"type": "subscribe", "channel": channel, "recover": {"epoch": last["epoch"], "offset": last["offset"]}}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert!(reply.get("snapshot").is_none(), "{reply}");
    let missed: Vec<(String, String, i64)> = ws
        .publications(3)
        .await
        .iter()
        .map(|p| {
            (
                p["data"]["type"].as_str().unwrap().to_owned(),
                id(&p["data"]["slot"]).to_owned(),
                p["data"]["slot"]["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        missed,
        vec![
            ("slot.created".into(), id(&second).to_owned(), 1),
            ("slot.moved".into(), id(&first).to_owned(), 2),
            ("slot.confirmed".into(), id(&second).to_owned(), 2),
        ]
    );
    // Nothing else is pending.
    let reply = ws.request(json!({"type": "ping"})).await;
    assert_eq!(reply["type"], "pong");
}

#[tokio::test]
async fn exports_parse_back_into_the_stored_slots() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let st = station(&app, &token, "Radio Nord, Lille", "Europe/Paris").await;
    let long_notes = "Attention : version longue du spot, à diffuser juste après le flash; ne pas couper.\nDeuxième ligne, avec \\ une barre.";
    let a = slot(
        &app,
        &token,
        id(&st),
        json!({"starts_at": "2030-01-10T08:00:00+01:00", "duration": 30, "title": "Soldes, \"hiver\"; 2030", "notes": long_notes, "campaign_ref": "C-1"}),
    )
    .await;
    let b = slot(
        &app,
        &token,
        id(&st),
        json!({"starts_at": "2030-01-10T08:30:00+01:00", "duration": 45, "spot_ref": "SPOT-B"}),
    )
    .await;
    let res = app
        .post(
            &format!("/api/v1/slots/{}/confirm", id(&a)),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .post(
            &format!("/api/v1/slots/{}/cancel", id(&b)),
            Some(&token),
            json!({"reason": "annulé"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let stored = list(&app, &token, id(&st), &day_window()).await;
    assert_eq!(stored.len(), 2);

    // CSV.
    let res = app
        .get(
            &format!("/api/v1/stations/{}/export.csv?{}", id(&st), day_window()),
            Some(&token),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(&header[..4], ["id", "station", "starts_at", "ends_at"]);
    let rows: Vec<HashMap<String, String>> = reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 2);
    for (row, s) in rows.iter().zip(&stored) {
        assert_eq!(row["id"], id(s));
        assert_eq!(row["station"], "Radio Nord, Lille");
        assert_eq!(row["starts_at"], s["starts_at"].as_str().unwrap());
        assert_eq!(row["ends_at"], s["ends_at"].as_str().unwrap());
        assert_eq!(row["status"], s["status"].as_str().unwrap());
        assert_eq!(row["version"], s["version"].to_string());
    }
    assert_eq!(rows[0]["title"], "Soldes, \"hiver\"; 2030");
    assert_eq!(rows[0]["notes"], long_notes);
    assert_eq!(rows[0]["local_start"], "2030-01-10T08:00:00+01:00");
    assert_eq!(rows[1]["cancel_reason"], "annulé");

    // iCalendar.
    let res = app
        .get(
            &format!("/api/v1/stations/{}/export.ics?{}", id(&st), day_window()),
            Some(&token),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/calendar")
    );
    let text = res.text().await.unwrap();
    for line in text.split("\r\n") {
        assert!(line.len() <= 75, "a line longer than 75 octets: {line}");
        assert!(!line.contains('\n'), "a bare line feed");
    }
    assert!(text.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:"));
    let calendar: icalendar::Calendar = text.parse().unwrap();
    let events: Vec<&icalendar::Event> = calendar.events().collect();
    assert_eq!(events.len(), 2);
    for (event, s) in events.iter().zip(&stored) {
        assert_eq!(event.get_uid().unwrap(), format!("{}@relais", id(s)));
        let ics_time = |rfc: &str| {
            let t: jiff::Timestamp = rfc.parse().unwrap();
            t.strftime("%Y%m%dT%H%M%SZ").to_string()
        };
        assert_eq!(
            event.property_value("DTSTART").unwrap(),
            ics_time(s["starts_at"].as_str().unwrap())
        );
        assert_eq!(
            event.property_value("DTEND").unwrap(),
            ics_time(s["ends_at"].as_str().unwrap())
        );
        assert_eq!(
            event.property_value("SEQUENCE").unwrap(),
            (s["version"].as_i64().unwrap() - 1).to_string()
        );
        assert!(event.property_value("DTSTAMP").is_some());
    }
    assert_eq!(events[0].get_summary().unwrap(), "Soldes, \"hiver\"; 2030");
    assert_eq!(events[0].property_value("STATUS").unwrap(), "CONFIRMED");
    assert!(
        events[0].get_description().unwrap().contains(long_notes),
        "{:?}",
        events[0].get_description()
    );
    assert_eq!(events[1].get_summary().unwrap(), "SPOT-B");
    assert_eq!(events[1].property_value("STATUS").unwrap(), "CANCELLED");

    // Readers only.
    let (_, client) = app.user("guest@example.com", &["client"]).await;
    let res = app
        .get(
            &format!("/api/v1/stations/{}/export.ics", id(&st)),
            Some(&client),
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn stations_are_validated_and_unique_by_external_ref() {
    let app = spawn_app().await;
    let key = app.api_key(&["planning"]).await;
    let res = app
        .post(
            "/api/v1/stations",
            Some(&key),
            json!({"name": "X", "time_zone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(error(res, 422).await["code"], "invalid_station");
    let res = app
        .post(
            "/api/v1/stations",
            Some(&key),
            json!({"name": "FM 1", "time_zone": "America/Montreal", "external_ref": "fm1"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let st: Value = res.json().await.unwrap();
    let res = app
        .post(
            "/api/v1/stations",
            Some(&key),
            json!({"name": "FM 1 bis", "time_zone": "UTC", "external_ref": "fm1"}),
        )
        .await;
    assert_eq!(error(res, 409).await["code"], "station_exists");
    let res = patch(
        &app,
        &key,
        &format!("/api/v1/stations/{}", id(&st)),
        None,
        json!({"name": "FM Un", "time_zone": "America/Toronto"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = app.get("/api/v1/stations", Some(&key)).await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"][0]["name"], "FM Un");
    assert_eq!(page["items"][0]["time_zone"], "America/Toronto");
    // Without the planning scope, a key reads nothing here.
    let other = app.api_key(&["publish"]).await;
    assert_eq!(
        app.get("/api/v1/stations", Some(&other)).await.status(),
        403
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_planning_routes() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    for path in [
        "/api/v1/stations",
        "/api/v1/stations/{id}",
        "/api/v1/stations/{id}/slots",
        "/api/v1/stations/{id}/plan",
        "/api/v1/stations/{id}/export.csv",
        "/api/v1/stations/{id}/export.ics",
        "/api/v1/slots/{id}",
        "/api/v1/slots/{id}/confirm",
        "/api/v1/slots/{id}/aired",
        "/api/v1/slots/{id}/cancel",
        "/api/v1/slots/{id}/missed",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}
