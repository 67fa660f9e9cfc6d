//! The extension points a domain module plugs into, exercised by a module
//! written here the way a domain would write it: a `ledger:` namespace whose
//! publish hook validates, persists first and transforms entries (or makes
//! typing indicators ephemeral), whose snapshot source serves every stored
//! entry, and an `ext.` RPC handler.
//!
//! The "store" of this module is a process-wide map, so two nodes of one
//! test share it as they would share a database.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use futures_util::future::BoxFuture;
use relais::{
    auth::{Principal, Role},
    bus::{Control, ControlMessage, Position},
    channels::{Access, ChannelKey, HistoryPolicy, KeyRule, Namespace},
    extension::{
        DomainError, PublishHook, PublishOutcome, Publisher, RpcCall, RpcHandler, SnapshotSource,
        method_not_found,
    },
    gateway::Extensions,
    module::{Context, Module},
};
use serde_json::{Value, json, value::RawValue};

use crate::helpers::*;

/// Stored entries by `tenant/channel`.
static LEDGER: LazyLock<Mutex<HashMap<String, Vec<Value>>>> = LazyLock::new(Default::default);

fn ledger_key(channel: &ChannelKey) -> String {
    format!("{}/{}", channel.tenant(), channel.name())
}

fn stored(channel: &ChannelKey) -> Vec<Value> {
    LEDGER
        .lock()
        .unwrap()
        .get(&ledger_key(channel))
        .cloned()
        .unwrap_or_default()
}

fn raw(value: Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).unwrap()
}

struct LedgerHook;

impl PublishHook for LedgerHook {
    fn on_publish<'a>(
        &'a self,
        publisher: Publisher<'a>,
        channel: &'a ChannelKey,
        data: &'a RawValue,
    ) -> BoxFuture<'a, Result<PublishOutcome, DomainError>> {
        Box::pin(async move {
            let by = match publisher {
                Publisher::User(p) => p.user.to_string(),
                Publisher::Backend => "backend".to_owned(),
            };
            let data: Value = serde_json::from_str(data.get()).unwrap();
            if data["typing"] == true {
                return Ok(PublishOutcome::Ephemeral(raw(
                    json!({"typing": true, "user": by}),
                )));
            }
            let Some(text) = data["text"].as_str().filter(|t| t.len() <= 100) else {
                return Err(DomainError::invalid(
                    "invalid_entry",
                    "an entry is {\"text\": …} of at most 100 bytes",
                ));
            };
            // Persist first: the entry exists before anyone can receive it.
            let mut ledger = LEDGER.lock().unwrap();
            let entries = ledger.entry(ledger_key(channel)).or_default();
            let entry = json!({"id": entries.len() + 1, "text": text, "by": by});
            entries.push(entry.clone());
            Ok(PublishOutcome::Publish(raw(entry)))
        })
    }
}

struct LedgerSnapshot;

impl SnapshotSource for LedgerSnapshot {
    fn snapshot<'a>(
        &'a self,
        _who: &'a Principal,
        channel: &'a ChannelKey,
        _at: &'a Position,
        params: Option<&'a RawValue>,
    ) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>> {
        Box::pin(async move {
            let params: Value =
                params.map_or(Value::Null, |p| serde_json::from_str(p.get()).unwrap());
            if params["fail"] == true {
                return Err(DomainError::invalid("bad_window", "no such window"));
            }
            Ok(raw(json!({"entries": stored(channel), "params": params})))
        })
    }
}

/// A control message for every node, as "cancel assistant run X" would be.
#[derive(serde::Serialize, serde::Deserialize)]
struct Shout {
    text: String,
}

impl Control for Shout {
    const TOPIC: &'static str = "test.shout";
}

struct ExtRpc {
    /// What this node's control handler heard, in order.
    heard: Arc<Mutex<Vec<String>>>,
}

impl RpcHandler for ExtRpc {
    fn call<'a>(&'a self, call: RpcCall<'a>) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>> {
        Box::pin(async move {
            let data: Value = call
                .data
                .map_or(Value::Null, |d| serde_json::from_str(d.get()).unwrap());
            match call.method {
                "ext.whoami" => Ok(raw(json!({"user": call.who.user.as_str(), "data": data}))),
                "ext.admin" if call.who.has_role(Role::Admin) => Ok(raw(json!({"ok": true}))),
                "ext.admin" => Err(DomainError::forbidden("admins only")),
                "ext.shout" => {
                    let shout = Shout {
                        text: data["text"].as_str().unwrap_or_default().to_owned(),
                    };
                    call.gateway
                        .broker
                        .control(ControlMessage::of(&shout))
                        .await
                        .map_err(DomainError::internal)?;
                    Ok(raw(json!({"sent": true})))
                }
                "ext.heard" => Ok(raw(json!(*self.heard.lock().unwrap()))),
                other => Err(method_not_found(other)),
            }
        })
    }
}

struct ExtModule {
    heard: Arc<Mutex<Vec<String>>>,
}

impl Module for ExtModule {
    fn name(&self) -> &'static str {
        "test-ext"
    }

    fn extend(&self, extensions: &mut Extensions) {
        extensions.channels.register(Namespace {
            name: "ledger",
            key: KeyRule::Required,
            subscribe: Access::Members,
            publish: Access::Members,
            presence: Access::Nobody,
            join_leave: false,
            history: HistoryPolicy {
                size: 3,
                ttl: std::time::Duration::from_secs(60),
            },
            hook: Some(Arc::new(LedgerHook)),
            snapshot: Some(Arc::new(LedgerSnapshot)),
        });
        extensions.rpc(
            "ext",
            Arc::new(ExtRpc {
                heard: self.heard.clone(),
            }),
        );
    }
}

pub fn module(ctx: &Context<'_>) -> anyhow::Result<Arc<dyn Module>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    ctx.control.on::<Shout>({
        let heard = heard.clone();
        move |shout| heard.lock().unwrap().push(shout.text)
    });
    Ok(Arc::new(ExtModule { heard }))
}

/// A `ledger:` channel no other test uses.
fn fresh_ledger() -> String {
    format!("ledger:{}", uuid::Uuid::new_v4().simple())
}

/// Entry ids of a snapshot.
fn snapshot_ids(subscribed: &Value) -> Vec<u64> {
    subscribed["snapshot"]["entries"]
        .as_array()
        .expect("a snapshot")
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

/// A fresh `ledger:` channel with a member subscribed to it (`sub`) and
/// another connected to write into it (`pubr`, user `writer`).
struct Ledger {
    channel: String,
    writer: String,
    reader_token: String,
    sub: Ws,
    pubr: Ws,
}

async fn ledger() -> (TestApp, Ledger) {
    let app = spawn_app().await;
    let (_, reader_token) = app.user("reader@example.com", &["member"]).await;
    let (writer, writer_token) = app.user("writer@example.com", &["member"]).await;
    let channel = fresh_ledger();
    let mut sub = app.ws_connected(&reader_token).await;
    sub.subscribe(&channel).await;
    let pubr = app.ws_connected(&writer_token).await;
    let ledger = Ledger {
        channel,
        writer,
        reader_token,
        sub,
        pubr,
    };
    (app, ledger)
}

#[tokio::test]
async fn the_publish_hook_persists_first_transforms_and_rejects_with_its_code() {
    let (
        app,
        Ledger {
            channel,
            writer,
            reader_token,
            mut sub,
            mut pubr,
        },
    ) = ledger().await;

    let reply = pubr
        .request(json!({"type": "publish", "channel": channel, "data": {"text": "hello"}}))
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["offset"], 1);
    let got = sub.publications(1).await;
    // Delivered as the hook stored it: with its id and author.
    assert_eq!(
        got[0]["data"],
        json!({"id": 1, "text": "hello", "by": writer})
    );

    // Rejected: an error frame with the hook's code, nothing stored, nothing delivered.
    let refused = pubr
        .request(json!({"type": "publish", "channel": channel, "data": {"text": 42}}))
        .await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "invalid_entry");

    // A backend's REST publication goes through the same hook.
    let key = app.api_key(&["publish"]).await;
    let res = app
        .post(
            "/api/v1/publish",
            Some(&key),
            json!({"channel": channel, "data": {"text": "from the backend"}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["offset"], 2);
    let res = app
        .post(
            "/api/v1/publish",
            Some(&key),
            json!({"channel": channel, "data": {"nope": true}}),
        )
        .await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_entry");

    // A batch could not be all-or-nothing through a persisting hook: refused whole.
    let res = app
        .post(
            "/api/v1/publish/batch",
            Some(&key),
            json!({"publications": [
                {"channel": "broadcast", "data": 1},
                {"channel": channel, "data": {"text": "in a batch"}},
            ]}),
        )
        .await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "batch_not_supported");

    let got = sub.publications(1).await;
    assert_eq!(got[0]["offset"], 2, "the refused entry took no offset");
    assert_eq!(got[0]["data"]["by"], "backend");
    assert_eq!(got[0]["data"]["id"], 2);

    // Snapshot and history agree with what was stored.
    let mut late = app.ws_connected(&reader_token).await;
    let subscribed = late.subscribe(&channel).await;
    assert_eq!(snapshot_ids(&subscribed), vec![1, 2]);
    assert_eq!(subscribed["offset"], 2);
}

#[tokio::test]
async fn ephemeral_publications_reach_subscribers_but_take_no_offset_and_no_history() {
    let (
        app,
        Ledger {
            channel,
            writer,
            mut sub,
            mut pubr,
            ..
        },
    ) = ledger().await;

    let reply = pubr
        .request(json!({"type": "publish", "channel": channel, "data": {"typing": true}}))
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["ephemeral"], true);
    assert!(reply.get("offset").is_none(), "{reply}");
    let event = sub.recv().await;
    assert_eq!(event["type"], "ephemeral");
    assert_eq!(event["channel"], channel.as_str());
    assert_eq!(event["data"], json!({"typing": true, "user": writer}));
    assert!(event.get("offset").is_none());

    // The next stored publication is offset 1: the typing indicator took none.
    pubr.request(json!({"type": "publish", "channel": channel, "data": {"text": "done"}}))
        .await;
    let got = sub.publications(1).await;
    assert_eq!(got[0]["offset"], 1);
    let history = sub
        .request(json!({"type": "history", "channel": channel}))
        .await;
    let kept = history["publications"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{history}");
    assert_eq!(kept[0]["data"]["text"], "done");
    assert_eq!(stored_texts(&app, &channel).await, vec!["done"]);
}

/// The texts the ledger holds for `channel` in `app`'s tenant.
async fn stored_texts(app: &TestApp, channel: &str) -> Vec<String> {
    let tenant = app
        .state
        .auth
        .find_tenant("default")
        .await
        .unwrap()
        .unwrap();
    let key = ChannelKey::new(
        tenant.id.as_str().into(),
        relais::channels::ChannelName::parse(channel).unwrap(),
    );
    stored(&key)
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn rpc_calls_reach_the_handler_of_their_prefix_with_the_callers_identity() {
    let app = spawn_app_with(&[
        ("RELAIS_WS_COMMANDS_PER_SEC", "1"),
        ("RELAIS_WS_COMMANDS_BURST", "6"),
    ])
    .await;
    let (member, member_token) = app.user("member@example.com", &["member"]).await;
    let mut ws = app.ws_connected(&member_token).await;

    let reply = ws
        .request(json!({"type": "rpc", "method": "ext.whoami", "data": {"n": 7}}))
        .await;
    assert_eq!(reply["type"], "rpc_result", "{reply}");
    assert_eq!(reply["data"], json!({"user": member, "data": {"n": 7}}));

    // Unknown methods, under a known prefix or not.
    for method in ["ext.nothing", "nobody.home", ""] {
        let reply = ws.request(json!({"type": "rpc", "method": method})).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "method_not_found", "{method}: {reply}");
    }

    // The handler decides who may call what.
    let reply = ws
        .request(json!({"type": "rpc", "method": "ext.admin"}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    let mut admin = app.ws_connected(&app.admin_token().await).await;
    let reply = admin
        .request(json!({"type": "rpc", "method": "ext.admin"}))
        .await;
    assert_eq!(reply["data"], json!({"ok": true}), "{reply}");

    // RPCs spend the connection's command budget (6, nearly spent above).
    let mut limited = 0;
    for _ in 0..4 {
        let reply = ws
            .request(json!({"type": "rpc", "method": "ext.whoami"}))
            .await;
        if reply["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited > 0, "no rpc was rate limited");
    assert_eq!(
        app.metric("relais_rate_limited_total").await as u64,
        limited
    );
}

#[tokio::test]
async fn a_subscriber_that_cannot_recover_gets_a_snapshot_and_one_that_can_does_not() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let channel = fresh_ledger();
    let mut ws = app.ws_connected(&token).await;
    for text in ["a", "b"] {
        ws.request(json!({"type": "publish", "channel": channel, "data": {"text": text}}))
            .await;
    }
    // Params reach the snapshot source; its errors refuse the subscription.
    let mut reader = app.ws_connected(&token).await;
    let reply = reader
        .request(json!({"type": "subscribe", "channel": channel, "params": {"fail": true}}))
        .await;
    assert_eq!(reply["code"], "bad_window", "{reply}");
    let subscribed = reader
        .request(json!({"type": "subscribe", "channel": channel, "params": {"day": "2026-12-05"}}))
        .await;
    assert_eq!(snapshot_ids(&subscribed), vec![1, 2]);
    assert_eq!(subscribed["snapshot"]["params"]["day"], "2026-12-05");
    let position = json!({"epoch": subscribed["epoch"], "offset": 1});

    // Recovery that works: the missed publication, no snapshot.
    let mut again = app.ws_connected(&token).await;
    let reply = again
        .request(json!({"type": "subscribe", "channel": channel, "recover": position}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert!(reply.get("snapshot").is_none(), "{reply}");
    assert_eq!(again.publications(1).await[0]["data"]["id"], 2);

    // Recovery that cannot work (unknown epoch): a snapshot instead.
    let mut lost = app.ws_connected(&token).await;
    let reply = lost
        .request(json!({"type": "subscribe", "channel": channel,
                        "recover": {"epoch": "gone", "offset": 1}}))
        .await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(snapshot_ids(&reply), vec![1, 2]);
}

/// Subscribers on one node, entries written through another while they
/// subscribe: each subscriber's snapshot plus its live publications hold
/// every entry, live offsets follow the snapshot's position without a gap or
/// a repeat, and no entry arrives live twice.
#[tokio::test]
async fn snapshot_then_live_across_two_nodes_has_no_gap_and_no_duplicate() {
    let (a, b) = two_nodes().await;
    let token = a.admin_token().await;
    let key = a.api_key(&["publish"]).await;
    let channel = fresh_ledger();
    const ENTRIES: u64 = 60;

    let writer = {
        let channel = channel.clone();
        let url = b.url("/api/v1/publish");
        let http = b.http.clone();
        tokio::spawn(async move {
            for n in 1..=ENTRIES {
                let res = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"channel": channel, "data": {"text": format!("e{n}")}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let mut subscribers = Vec::new();
    for _ in 0..6 {
        let mut ws = a.ws_connected(&token).await;
        let subscribed = ws.subscribe(&channel).await;
        subscribers.push((ws, subscribed));
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    writer.await.unwrap();

    for (mut ws, subscribed) in subscribers {
        let at = subscribed["offset"].as_u64().unwrap();
        let mut have: Vec<u64> = snapshot_ids(&subscribed);
        // Everything at or before the snapshot's position is in it.
        assert!(
            have.len() as u64 >= at,
            "snapshot {have:?} misses entries up to {at}"
        );
        let live = ws.publications((ENTRIES - at) as usize).await;
        let offsets: Vec<u64> = live.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, ((at + 1)..=ENTRIES).collect::<Vec<_>>());
        for p in &live {
            have.push(p["data"]["id"].as_u64().unwrap());
        }
        have.sort_unstable();
        have.dedup();
        assert_eq!(have, (1..=ENTRIES).collect::<Vec<_>>());
        // Nothing more arrives: the next frame answers a ping.
        ws.send_json(json!({"type": "ping", "id": 9999})).await;
        assert_eq!(ws.recv().await["type"], "pong");
    }
}

/// Two nodes of a cluster sharing one Redis.
async fn two_nodes() -> (TestApp, TestApp) {
    let a = first_cluster_node().await;
    let b = a.spawn_peer().await;
    (a, b)
}

/// What the `ext` module of the node behind `ws` heard.
async fn heard(ws: &mut Ws) -> Vec<String> {
    let reply = ws
        .request(json!({"type": "rpc", "method": "ext.heard"}))
        .await;
    serde_json::from_value(reply["data"].clone()).unwrap()
}

async fn until_heard(ws: &mut Ws, text: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = heard(ws).await;
        if got.iter().any(|t| t == text) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never heard {text}: {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_typed_control_message_reaches_every_node_once() {
    let (a, b) = two_nodes().await;
    let token = a.admin_token().await;
    let mut on_a = a.ws_connected(&token).await;
    let mut on_b = b.ws_connected(&token).await;
    let reply = on_a
        .request(json!({"type": "rpc", "method": "ext.shout", "data": {"text": "cancel run 7"}}))
        .await;
    assert_eq!(reply["data"]["sent"], true, "{reply}");
    assert_eq!(
        until_heard(&mut on_b, "cancel run 7").await,
        vec!["cancel run 7"]
    );
    // B answers on the same control channel: once A hears it, A has also
    // had its own message echoed back by Redis, and must not apply it twice.
    on_b.request(json!({"type": "rpc", "method": "ext.shout", "data": {"text": "barrier"}}))
        .await;
    assert_eq!(
        until_heard(&mut on_a, "barrier").await,
        vec!["cancel run 7", "barrier"]
    );
}
