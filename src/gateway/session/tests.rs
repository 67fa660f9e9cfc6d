//! The session driven without a socket: a vector is the transport.

use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::{
    auth::{AuthService, Role, tokens::JwtKeys},
    bus::{ControlRouter, memory::MemoryBroker},
    channels::ChannelRegistry,
    config::{Limits, OriginPolicy},
    gateway::{Extensions, hub::Hub},
    metrics::Metrics,
    store::Store,
};

/// Frames as the client would read them.
#[derive(Default)]
struct Recorded(Vec<(FrameKind, serde_json::Value, String)>);

impl Frames for Recorded {
    async fn feed(
        &mut self,
        frame: Utf8Bytes,
        kind: FrameKind,
        subs: &Subscriptions,
    ) -> Result<(), Closed> {
        let value = serde_json::from_str(frame.as_str()).expect("JSON frame");
        self.0.push((kind, value, subs.event_id()));
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), Closed> {
        Ok(())
    }
}

async fn gateway(dir: &std::path::Path) -> Arc<Gateway> {
    gateway_with(
        dir,
        Extensions {
            channels: ChannelRegistry::core(),
            ..Extensions::default()
        },
    )
    .await
}

async fn gateway_with(dir: &std::path::Path, extensions: Extensions) -> Arc<Gateway> {
    let store = Store::connect(None, dir).await.unwrap();
    store.migrate().await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(Hub::new(metrics.clone()));
    let broker = Arc::new(MemoryBroker::new(
        hub.clone(),
        Arc::new(ControlRouter::default()),
        1000,
        metrics.clone(),
    ));
    let auth = Arc::new(AuthService::new(
        store,
        JwtKeys::new(&SecretString::from("k".repeat(32))),
        Duration::from_secs(60),
        Duration::from_secs(60),
        broker.clone(),
        Arc::default(),
    ));
    let gw = Arc::new(Gateway::new(
        hub,
        broker,
        auth,
        Limits::default(),
        OriginPolicy::Any,
        metrics,
    ));
    gw.seal(extensions);
    gw
}

fn admin() -> Principal {
    Principal {
        tenant: "t".into(),
        user: "u".into(),
        session: "s".into(),
        roles: vec![Role::Admin],
        expires_at: u64::MAX,
        origin: None,
    }
}

fn data(n: u64) -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"n":{n}}}"#)).unwrap()
}

async fn publish(gw: &Gateway, n: u64) {
    let (key, ns) = gw.resolve(&"t".into(), "broadcast").unwrap();
    gw.publish(&key, ns, &data(n)).await.unwrap();
}

fn drained(session: &Session) -> VecDeque<Arc<Publication>> {
    match session.outbox().drain() {
        super::super::outbox::Drained::Items(items) => items,
        super::super::outbox::Drained::Close(r) => panic!("closed: {r:?}"),
    }
}

#[tokio::test]
async fn a_subscription_delivers_in_order_and_drops_what_it_already_delivered() {
    let dir = std::env::temp_dir().join(format!("relais-session-{}", uuid::Uuid::new_v4()));
    let gw = gateway(&dir).await;
    let mut session = Session::open(
        gw.clone(),
        admin(),
        Transport::WebSocket,
        OnGap::Unsubscribe,
    );
    let mut out = Recorded::default();
    let text = r#"{"id":1,"type":"subscribe","channel":"broadcast"}"#;
    session.handle_text(text, &mut out).await.unwrap();
    assert_eq!(out.0[0].1["type"], "subscribed");
    publish(&gw, 1).await;
    publish(&gw, 2).await;
    let items = drained(&session);
    // The same publications twice (a catch-up overlapping live delivery).
    let doubled: VecDeque<_> = items.iter().chain(items.iter()).cloned().collect();
    session.write_batch(&mut out, doubled).await.unwrap();
    let offsets: Vec<_> = out.0[1..]
        .iter()
        .map(|(_, f, _)| f["offset"].clone())
        .collect();
    assert_eq!(offsets, vec![1, 2]);
    session.close().await;
    assert_eq!(gw.hub.connection_count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_gap_unsubscribes_over_websocket_and_ends_an_sse_stream() {
    let dir = std::env::temp_dir().join(format!("relais-session-{}", uuid::Uuid::new_v4()));
    let gw = gateway(&dir).await;
    for on_gap in [OnGap::Unsubscribe, OnGap::End] {
        let mut session = Session::open(gw.clone(), admin(), Transport::WebSocket, on_gap);
        let mut out = Recorded::default();
        let joined = session.join("broadcast", None, None).await.unwrap();
        session.announce(&mut out, None, joined).await.unwrap();
        publish(&gw, 1).await;
        publish(&gw, 2).await;
        let mut items = drained(&session);
        items.pop_front(); // lost on the way: the next one is a gap
        let result = session.write_batch(&mut out, items).await;
        match on_gap {
            OnGap::Unsubscribe => {
                result.unwrap();
                let (kind, frame, _) = out.0.last().unwrap();
                assert_eq!(*kind, FrameKind::Unsubscribed);
                assert_eq!(frame["reason"], "insufficient_state");
                assert!(session.subscriptions().is_empty());
            }
            OnGap::End => {
                assert!(matches!(result, Err(Stop::Resync)));
                assert_eq!(out.0.len(), 1, "nothing written past the gap");
            }
        }
        session.close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn event_ids_name_a_channel_only_once_the_client_may_resume_from_it() {
    let dir = std::env::temp_dir().join(format!("relais-session-{}", uuid::Uuid::new_v4()));
    let gw = gateway(&dir).await;
    publish(&gw, 1).await;
    let mut session = Session::open(gw.clone(), admin(), Transport::Sse, OnGap::End);
    let user_channel = "user:u";
    // Recovery fails (unknown epoch): not resumable until announced.
    let lost = Position {
        epoch: "gone".into(),
        offset: 3,
    };
    let a = session.join("broadcast", Some(lost), None).await.unwrap();
    let b = session.join(user_channel, None, None).await.unwrap();
    assert_eq!(session.subscriptions().event_id(), "");
    let mut out = Recorded::default();
    session.announce(&mut out, None, a).await.unwrap();
    assert_eq!(out.0[0].1["recovered"], false);
    assert!(out.0[0].2.starts_with("broadcast@"), "{}", out.0[0].2);
    assert!(!out.0[0].2.contains("user:u@"));
    session.announce(&mut out, None, b).await.unwrap();
    assert!(out.0[1].2.contains("broadcast@") && out.0[1].2.contains("user:u@"));
    session.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn commands_are_refused_with_codes_and_flooding_closes() {
    let dir = std::env::temp_dir().join(format!("relais-session-{}", uuid::Uuid::new_v4()));
    let gw = gateway(&dir).await;
    let mut session = Session::open(
        gw.clone(),
        admin(),
        Transport::WebSocket,
        OnGap::Unsubscribe,
    );
    let mut out = Recorded::default();
    for (text, code) in [
        ("{", "malformed_frame"),
        (r#"{"id":2,"type":"teleport"}"#, "unknown_command"),
        (
            r#"{"id":3,"type":"rpc","method":"chat.mark_read"}"#,
            "method_not_found",
        ),
        (
            r#"{"id":4,"type":"subscribe","channel":"nowhere:x"}"#,
            "channel_not_found",
        ),
    ] {
        session.handle_text(text, &mut out).await.unwrap();
        let (_, frame, _) = out.0.last().unwrap();
        assert_eq!(frame["code"], code, "{text}");
    }
    let ping = r#"{"type":"ping"}"#;
    let mut closed = None;
    for _ in 0..1000 {
        if let Err(reason) = session.handle_text(ping, &mut out).await {
            closed = Some(reason);
            break;
        }
    }
    assert_eq!(closed, Some(CloseReason::RateLimited));
    session.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Records what a presence observer is told.
#[derive(Default)]
struct Observed(std::sync::Mutex<Vec<(String, String, bool)>>);

impl crate::extension::PresenceObserver for Observed {
    fn presence_changed(&self, who: &Principal, channel: &ChannelKey, present: bool) {
        self.0
            .lock()
            .unwrap()
            .push((who.user.to_string(), channel.name().to_string(), present));
    }
}

#[tokio::test]
async fn a_presence_observer_hears_the_first_connection_in_and_the_last_out() {
    let dir = std::env::temp_dir().join(format!("relais-session-{}", uuid::Uuid::new_v4()));
    let observed = Arc::new(Observed::default());
    let mut extensions = Extensions {
        channels: ChannelRegistry::core(),
        ..Extensions::default()
    };
    extensions.observe_presence("broadcast", observed.clone());
    let gw = gateway_with(&dir, extensions).await;
    let subscribe = r#"{"id":1,"type":"subscribe","channel":"broadcast"}"#;
    let mut first = Session::open(
        gw.clone(),
        admin(),
        Transport::WebSocket,
        OnGap::Unsubscribe,
    );
    let mut second = Session::open(
        gw.clone(),
        admin(),
        Transport::WebSocket,
        OnGap::Unsubscribe,
    );
    first
        .handle_text(subscribe, &mut Recorded::default())
        .await
        .unwrap();
    second
        .handle_text(subscribe, &mut Recorded::default())
        .await
        .unwrap();
    let heard = || observed.0.lock().unwrap().clone();
    assert_eq!(heard(), vec![("u".into(), "broadcast".into(), true)]);
    // The user is still there through the second connection.
    first.close().await;
    assert_eq!(heard().len(), 1);
    let unsubscribe = r#"{"id":2,"type":"unsubscribe","channel":"broadcast"}"#;
    second
        .handle_text(unsubscribe, &mut Recorded::default())
        .await
        .unwrap();
    assert_eq!(heard()[1], ("u".into(), "broadcast".into(), false));
    second.close().await;
    assert_eq!(heard().len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}
