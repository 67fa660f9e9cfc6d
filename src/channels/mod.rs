//! Channel names and the namespace registry: who may subscribe, publish and
//! see presence, and how much history a channel keeps.
//!
//! A channel name is `namespace` or `namespace:key`. Each namespace is
//! declared once with its policy. The core registers `user`, `role` and
//! `broadcast`; domain modules register their own namespaces (with
//! [`Access::Check`] for rules that need the store, such as project
//! membership) without the gateway knowing them.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;

use crate::{
    auth::{Permission, Principal, Role},
    extension::{PublishHook, SnapshotSource},
    ids::TenantId,
};

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Publications kept; 0 keeps none (offsets still increase).
    pub size: usize,
    /// Publications older than this are dropped.
    pub ttl: Duration,
}

/// Parses `namespace=SIZE/TTL_SECS,…` (e.g. `broadcast=2000/3600`): the
/// history each namespace's channels keep, from configuration. Whether the
/// namespaces exist is checked once the modules have declared theirs.
pub fn parse_history_overrides(value: &str) -> Result<Vec<(String, HistoryPolicy)>, String> {
    let mut overrides: Vec<(String, HistoryPolicy)> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once('=').and_then(|(ns, policy)| {
            let (size, ttl) = policy.split_once('/')?;
            Some((
                ns.trim(),
                size.trim().parse::<usize>().ok()?,
                ttl.trim().parse::<u64>().ok()?,
            ))
        });
        let Some((ns, size, ttl)) = parsed else {
            return Err(format!(
                "`{item}` is not `namespace=SIZE/TTL_SECS` (e.g. `broadcast=2000/3600`)"
            ));
        };
        if size > MAX_HISTORY_SIZE || ttl == 0 {
            return Err(format!(
                "`{item}`: the size is at most {MAX_HISTORY_SIZE} and the TTL at least 1 s"
            ));
        }
        if overrides.iter().any(|(n, _)| n == ns) {
            return Err(format!("`{ns}` is given twice"));
        }
        overrides.push((
            ns.to_owned(),
            HistoryPolicy {
                size,
                ttl: Duration::from_secs(ttl),
            },
        ));
    }
    Ok(overrides)
}

/// Largest history one channel may keep: every publication of it is held
/// in memory (in-process bus) or in Redis, per channel.
pub const MAX_HISTORY_SIZE: usize = 100_000;

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 200;

/// A validated channel name (without tenant).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelName(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is not valid: {0}")]
    Invalid(&'static str),
    #[error("no such channel namespace `{0}`")]
    UnknownNamespace(String),
}

impl ChannelName {
    /// Accepts `namespace` or `namespace:key`: namespace `[a-z][a-z0-9_-]*`,
    /// key of `[A-Za-z0-9_.:=-]`, total at most [`MAX_CHANNEL_LEN`].
    pub fn parse(s: &str) -> Result<ChannelName, ChannelError> {
        if s.is_empty() || s.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::Invalid("length must be 1-200"));
        }
        let (ns, key) = match s.split_once(':') {
            Some((ns, key)) => (ns, Some(key)),
            None => (s, None),
        };
        let ns_ok = ns.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ns_ok {
            return Err(ChannelError::Invalid(
                "namespace must match [a-z][a-z0-9_-]*",
            ));
        }
        if let Some(key) = key
            && (key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:=-".contains(&b)))
        {
            return Err(ChannelError::Invalid(
                "key must be made of A-Z a-z 0-9 _ . : = -",
            ));
        }
        Ok(ChannelName(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(ns, _)| ns)
    }

    pub fn key(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, key)| key)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A channel within a tenant: the unit of ordering, history and fan-out.
/// Two tenants' `broadcast` channels are different keys, which is what keeps
/// them apart everywhere below the gateway.
#[derive(Clone, Debug)]
pub struct ChannelKey {
    tenant: TenantId,
    name: ChannelName,
}

/// Equality by content, with a pointer fast path: keys handed out by the hub
/// share their allocations, and the per-delivery subscription lookup hits it.
impl PartialEq for ChannelKey {
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.name.0, &other.name.0) && self.tenant.same_allocation(&other.tenant))
            || (self.name == other.name && self.tenant == other.tenant)
    }
}

impl Eq for ChannelKey {}

/// Hashes the content, consistent with [`PartialEq`].
impl std::hash::Hash for ChannelKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.tenant.hash(state);
        self.name.hash(state);
    }
}

impl ChannelKey {
    pub fn new(tenant: TenantId, name: ChannelName) -> Self {
        ChannelKey { tenant, name }
    }
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    pub fn name(&self) -> &ChannelName {
        &self.name
    }
}

/// A rule that needs more than the principal and the name (e.g. a store lookup).
pub trait AccessCheck: Send + Sync {
    fn allows<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, anyhow::Result<bool>>;
}

/// Who may do something on a namespace's channels.
#[derive(Clone)]
pub enum Access {
    Nobody,
    /// Any signed-in user of the tenant.
    Members,
    /// The user whose id is the channel key (`user:<id>`).
    Owner,
    /// Holders of the role named by the channel key (`role:<role>`).
    RoleInKey,
    /// Holders of a permission.
    Permission(Permission),
    /// Either of two rules.
    Either(Box<Access>, Box<Access>),
    /// A domain rule.
    Check(Arc<dyn AccessCheck>),
}

impl Access {
    pub fn or(self, other: Access) -> Access {
        Access::Either(Box::new(self), Box::new(other))
    }

    fn allows<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            Ok(match self {
                Access::Nobody => false,
                // Visitors (widgets) are no members and hold no role.
                Access::Members => !who.is_visitor(),
                Access::Owner => channel.key() == Some(who.user.as_str()),
                Access::RoleInKey if who.is_visitor() => false,
                Access::RoleInKey => channel
                    .key()
                    .and_then(|k| k.parse::<Role>().ok())
                    .is_some_and(|r| who.has_role(r)),
                Access::Permission(p) => who.can(*p),
                Access::Either(a, b) => {
                    a.allows(who, channel).await? || b.allows(who, channel).await?
                }
                Access::Check(check) => check.allows(who, channel).await?,
            })
        })
    }
}

/// Whether a namespace's channels carry a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRule {
    Required,
    Forbidden,
}

/// A namespace and its policy.
#[derive(Clone)]
pub struct Namespace {
    pub name: &'static str,
    pub key: KeyRule,
    pub subscribe: Access,
    /// Clients publishing over the WebSocket. Backends with the `publish`
    /// scope (or the publish permission) may publish to any channel.
    pub publish: Access,
    pub presence: Access,
    /// Send `join`/`leave` events to subscribers.
    pub join_leave: bool,
    pub history: HistoryPolicy,
    /// Runs on every client and backend publication (not on a domain's own).
    pub hook: Option<Arc<dyn PublishHook>>,
    /// The channel's state, sent to subscribers that do not recover.
    pub snapshot: Option<Arc<dyn SnapshotSource>>,
}

/// The three things a caller may try on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Subscribe,
    Publish,
    Presence,
}

/// All namespaces known to this node.
#[derive(Clone, Default)]
pub struct ChannelRegistry {
    namespaces: HashMap<&'static str, Namespace>,
}

impl ChannelRegistry {
    /// The core namespaces every tenant has.
    pub fn core() -> Self {
        let mut registry = ChannelRegistry::default();
        let admin_presence = Access::Permission(Permission::SeePresence);
        registry.register(Namespace {
            name: "user",
            key: KeyRule::Required,
            subscribe: Access::Owner,
            publish: Access::Nobody,
            presence: Access::Owner,
            join_leave: false,
            history: HistoryPolicy {
                size: 200,
                ttl: Duration::from_secs(24 * 3600),
            },
            hook: None,
            snapshot: None,
        });
        registry.register(Namespace {
            name: "role",
            key: KeyRule::Required,
            subscribe: Access::RoleInKey,
            publish: Access::Nobody,
            presence: admin_presence.clone(),
            join_leave: false,
            history: HistoryPolicy {
                size: 100,
                ttl: Duration::from_secs(3600),
            },
            hook: None,
            snapshot: None,
        });
        registry.register(Namespace {
            name: "broadcast",
            key: KeyRule::Forbidden,
            subscribe: Access::Members,
            publish: Access::Permission(Permission::PublishAny),
            presence: admin_presence,
            join_leave: false,
            history: HistoryPolicy {
                size: 100,
                ttl: Duration::from_secs(3600),
            },
            hook: None,
            snapshot: None,
        });
        registry
    }

    /// Adds a namespace. Panics on a duplicate name: that is a programming
    /// error caught at start-up, not a runtime condition.
    pub fn register(&mut self, namespace: Namespace) {
        let previous = self.namespaces.insert(namespace.name, namespace);
        assert!(previous.is_none(), "channel namespace registered twice");
    }

    /// Replaces a namespace's history policy (from configuration). Returns
    /// `false` when no such namespace is registered.
    pub fn set_history(&mut self, namespace: &str, history: HistoryPolicy) -> bool {
        match self.namespaces.get_mut(namespace) {
            Some(ns) => {
                ns.history = history;
                true
            }
            None => false,
        }
    }

    /// The namespace of `name`, checking its key rule.
    pub fn resolve(&self, name: &ChannelName) -> Result<&Namespace, ChannelError> {
        let ns = self
            .namespaces
            .get(name.namespace())
            .ok_or_else(|| ChannelError::UnknownNamespace(name.namespace().to_owned()))?;
        match (ns.key, name.key()) {
            (KeyRule::Required, None) => Err(ChannelError::Invalid(
                "this namespace needs a key (`namespace:key`)",
            )),
            (KeyRule::Forbidden, Some(_)) => {
                Err(ChannelError::Invalid("this namespace takes no key"))
            }
            _ => Ok(ns),
        }
    }

    /// Whether `who` may perform `op` on `name` under `ns`'s policy.
    pub async fn allows(
        &self,
        ns: &Namespace,
        op: Operation,
        who: &Principal,
        name: &ChannelName,
    ) -> anyhow::Result<bool> {
        let rule = match op {
            Operation::Subscribe => &ns.subscribe,
            Operation::Publish => &ns.publish,
            Operation::Presence => &ns.presence,
        };
        rule.allows(who, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, roles: &[Role]) -> Principal {
        Principal {
            tenant: "t".into(),
            user: user.into(),
            session: "s".into(),
            roles: roles.to_vec(),
            expires_at: u64::MAX,
            origin: None,
        }
    }

    #[test]
    fn channel_names_are_validated() {
        assert!(ChannelName::parse("broadcast").is_ok());
        assert!(ChannelName::parse("user:0190-abc").is_ok());
        assert!(ChannelName::parse("").is_err());
        assert!(ChannelName::parse("Broadcast").is_err());
        assert!(ChannelName::parse("user:").is_err());
        assert!(ChannelName::parse("user:a b").is_err());
        assert!(ChannelName::parse(&"a".repeat(201)).is_err());
        let name = ChannelName::parse("room:a:b").unwrap();
        assert_eq!((name.namespace(), name.key()), ("room", Some("a:b")));
    }

    #[tokio::test]
    async fn core_policies_allow_and_refuse_as_declared() {
        let registry = ChannelRegistry::core();
        let alice = principal("alice", &[Role::Member]);
        let admin = principal("root", &[Role::Admin]);
        let check = |name: &str, op, who: Principal| {
            let registry = registry.clone();
            let name = ChannelName::parse(name).unwrap();
            async move {
                let ns = registry.resolve(&name).unwrap().clone();
                registry.allows(&ns, op, &who, &name).await.unwrap()
            }
        };
        assert!(check("user:alice", Operation::Subscribe, alice.clone()).await);
        assert!(!check("user:bob", Operation::Subscribe, alice.clone()).await);
        assert!(!check("user:alice", Operation::Publish, alice.clone()).await);
        assert!(check("role:member", Operation::Subscribe, alice.clone()).await);
        assert!(!check("role:admin", Operation::Subscribe, alice.clone()).await);
        assert!(check("broadcast", Operation::Subscribe, alice.clone()).await);
        assert!(!check("broadcast", Operation::Publish, alice.clone()).await);
        assert!(check("broadcast", Operation::Publish, admin.clone()).await);
        assert!(!check("broadcast", Operation::Presence, alice).await);
        assert!(check("broadcast", Operation::Presence, admin).await);
    }

    #[test]
    fn history_overrides_are_parsed_and_bad_ones_refused() {
        let parsed = parse_history_overrides("broadcast=2000/3600, user=0/60").unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, "broadcast");
        assert_eq!(parsed[0].1.size, 2000);
        assert_eq!(parsed[0].1.ttl, Duration::from_secs(3600));
        assert_eq!(parsed[1].1.size, 0);
        for bad in [
            "broadcast",
            "broadcast=10",
            "broadcast=x/10",
            "broadcast=10/0",
            "broadcast=1000000/10",
            "a=1/1,a=2/2",
        ] {
            assert!(parse_history_overrides(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn key_rules_are_enforced() {
        let registry = ChannelRegistry::core();
        assert!(
            registry
                .resolve(&ChannelName::parse("user").unwrap())
                .is_err()
        );
        assert!(
            registry
                .resolve(&ChannelName::parse("broadcast:x").unwrap())
                .is_err()
        );
        assert!(matches!(
            registry.resolve(&ChannelName::parse("nope:x").unwrap()),
            Err(ChannelError::UnknownNamespace(_))
        ));
    }
}
