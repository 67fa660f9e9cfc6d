//! Client RPC: `{"type":"rpc","method":"chat.mark_read","data":…}` is routed
//! to the handler a domain module registered for the method's prefix (the
//! part before the first `.`), with the caller's principal. The gateway
//! checks nothing but the route; each handler authorises its own methods.
//! RPCs share the connection's command budget with every other command.

use std::{collections::HashMap, sync::Arc};

use serde_json::value::RawValue;

use crate::{
    auth::Principal,
    extension::{DomainError, RpcCall, RpcHandler, method_not_found},
};

/// Longest method name accepted.
const MAX_METHOD_LEN: usize = 100;

/// The RPC handlers of this node, by method prefix.
#[derive(Default, Clone)]
pub struct RpcRegistry {
    handlers: HashMap<&'static str, Arc<dyn RpcHandler>>,
}

impl RpcRegistry {
    /// Routes methods `prefix.*` to `handler`. Panics on a duplicate prefix:
    /// a programming error caught at start-up.
    pub fn register(&mut self, prefix: &'static str, handler: Arc<dyn RpcHandler>) {
        assert!(!prefix.contains('.'), "an rpc prefix has no dot");
        let previous = self.handlers.insert(prefix, handler);
        assert!(previous.is_none(), "rpc prefix registered twice");
    }

    pub async fn call(
        &self,
        gateway: &super::Gateway,
        who: &Principal,
        method: &str,
        data: Option<&RawValue>,
    ) -> Result<Box<RawValue>, DomainError> {
        if method.is_empty() || method.len() > MAX_METHOD_LEN {
            return Err(method_not_found(method));
        }
        let prefix = method.split_once('.').map_or(method, |(p, _)| p);
        let handler = self
            .handlers
            .get(prefix)
            .ok_or_else(|| method_not_found(method))?;
        handler
            .call(RpcCall {
                gateway,
                who,
                method,
                data,
            })
            .await
    }
}
