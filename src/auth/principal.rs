//! Who is calling: a signed-in user or an app backend holding an API key.

use serde::{Deserialize, Serialize};

use super::rbac::{Permission, Role};
use crate::ids::{ApiKeyId, SessionId, TenantId, UserId};

/// A signed-in user, established from a verified access token and a live session.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub user: UserId,
    pub session: SessionId,
    pub roles: Vec<Role>,
    /// Expiry of the access token it came from (Unix seconds).
    pub expires_at: u64,
    /// Set for an anonymous visitor of a web page (an embedded widget): the
    /// one origin its token may be used from. A visitor has no roles, is
    /// no member of the tenant, and reaches only what names it.
    pub origin: Option<String>,
}

impl Principal {
    /// An anonymous visitor rather than a user of the tenant.
    pub fn is_visitor(&self) -> bool {
        self.origin.is_some()
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.roles
            .iter()
            .any(|r| r.permissions().contains(&permission))
    }
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Publish to any channel of the tenant.
    Publish,
    /// Trigger notifications.
    Notify,
    /// Tenant administration (users, keys).
    Admin,
    /// Manage projects and their members, report project events.
    Projects,
    /// Create moderation queue items and decide on them.
    Queues,
    /// Manage stations and their planning (slots, imports, exports).
    Planning,
    /// Post chat messages and read chat rooms as an app backend.
    Chat,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Notify => "notify",
            Scope::Admin => "admin",
            Scope::Projects => "projects",
            Scope::Queues => "queues",
            Scope::Planning => "planning",
            Scope::Chat => "chat",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "publish" => Some(Scope::Publish),
            "notify" => Some(Scope::Notify),
            "admin" => Some(Scope::Admin),
            "projects" => Some(Scope::Projects),
            "queues" => Some(Scope::Queues),
            "planning" => Some(Scope::Planning),
            "chat" => Some(Scope::Chat),
            _ => None,
        }
    }
}

/// An app backend authenticated by an API key.
#[derive(Debug, Clone)]
pub struct KeyHolder {
    pub tenant: TenantId,
    pub key: ApiKeyId,
    pub scopes: Vec<Scope>,
}

/// Either kind of caller, for endpoints that serve both.
#[derive(Debug, Clone)]
pub enum Caller {
    User(Principal),
    Key(KeyHolder),
}

impl Caller {
    pub fn tenant(&self) -> &TenantId {
        match self {
            Caller::User(p) => &p.tenant,
            Caller::Key(k) => &k.tenant,
        }
    }

    /// Users need the permission; keys need the scope that corresponds to it.
    pub fn allowed(&self, permission: Permission, scope: Scope) -> bool {
        match self {
            Caller::User(p) => p.can(permission),
            Caller::Key(k) => k.scopes.contains(&scope),
        }
    }
}
