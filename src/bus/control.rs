//! Control messages: typed instructions for every node of the cluster
//! ("close these sessions", "forget this API key", "cancel assistant run X").
//!
//! A module declares a message type with [`Control`] and registers a handler
//! for it on the node's [`ControlRouter`]; anyone holding the broker sends it
//! with [`crate::bus::Broker::control`]. The bus carries the envelope
//! (`{"topic":…,"body":…}`) without knowing what it means, so new domains add
//! messages without touching the bus.

use std::{collections::HashMap, sync::Arc};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

/// A message type carried to every node. `TOPIC` names it on the wire and
/// must be unique within the application.
pub trait Control: Serialize + DeserializeOwned + Send + 'static {
    const TOPIC: &'static str;
}

/// The envelope on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlMessage {
    pub topic: String,
    pub body: Box<RawValue>,
}

impl ControlMessage {
    /// Wraps a typed message.
    pub fn of<T: Control>(message: &T) -> ControlMessage {
        // Serialising a plain message type cannot fail; `null` is the
        // harmless fallback a handler would refuse to decode.
        let body = serde_json::value::to_raw_value(message)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        ControlMessage {
            topic: T::TOPIC.to_owned(),
            body,
        }
    }
}

type Handler = Arc<dyn Fn(&RawValue) + Send + Sync>;

/// Routes control messages to the handler registered for their topic. Shared
/// by the broker (which feeds it) and the modules (which register handlers
/// while the application is built, after the broker exists).
#[derive(Default)]
pub struct ControlRouter {
    handlers: RwLock<HashMap<&'static str, Handler>>,
}

impl ControlRouter {
    /// Registers the handler of `T`. Panics if the topic already has one:
    /// two modules claiming a topic is a programming error caught at start-up.
    pub fn on<T: Control>(&self, handler: impl Fn(T) + Send + Sync + 'static) {
        let handler: Handler =
            Arc::new(
                move |body: &RawValue| match serde_json::from_str::<T>(body.get()) {
                    Ok(message) => handler(message),
                    Err(e) => {
                        tracing::warn!(topic = T::TOPIC, error = %e, "malformed control message")
                    }
                },
            );
        let previous = self.handlers.write().insert(T::TOPIC, handler);
        assert!(previous.is_none(), "control topic registered twice");
    }

    /// Runs the handler of `message`'s topic on this node; messages of
    /// topics nobody registered here are ignored (a node may run fewer modules
    /// during a rolling upgrade).
    pub fn dispatch(&self, message: &ControlMessage) {
        let handler = self.handlers.read().get(message.topic.as_str()).cloned();
        match handler {
            Some(handler) => handler(&message.body),
            None => tracing::debug!(topic = %message.topic, "control message with no handler"),
        }
    }

    /// Decodes a message received from another node and dispatches it.
    pub fn dispatch_json(&self, payload: &[u8]) {
        match serde_json::from_slice::<ControlMessage>(payload) {
            Ok(message) => self.dispatch(&message),
            Err(e) => tracing::warn!(error = %e, "malformed control envelope"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Cancel {
        run: u64,
    }
    impl Control for Cancel {
        const TOPIC: &'static str = "test.cancel";
    }

    #[test]
    fn messages_reach_the_handler_of_their_topic_through_the_wire_format() {
        let router = ControlRouter::default();
        let seen = Arc::new(AtomicU64::new(0));
        router.on::<Cancel>({
            let seen = seen.clone();
            move |m| seen.store(m.run, Ordering::SeqCst)
        });
        let wire = serde_json::to_vec(&ControlMessage::of(&Cancel { run: 42 })).unwrap();
        router.dispatch_json(&wire);
        assert_eq!(seen.load(Ordering::SeqCst), 42);
        // Unknown topics and malformed bodies are ignored, not fatal.
        router.dispatch_json(br#"{"topic":"nobody","body":{}}"#);
        router.dispatch_json(br#"{"topic":"test.cancel","body":{"run":"x"}}"#);
        assert_eq!(seen.load(Ordering::SeqCst), 42);
    }
}
