//! Roles and the permissions they grant, declared in one table.
//!
//! Roles are what tenant admins assign; code checks permissions, so a role's
//! meaning can change in one place.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Moderator,
    Broadcaster,
    Editor,
    Member,
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Manage users, roles and API keys of the tenant.
    ManageTenant,
    /// Publish to any channel of the tenant through the REST API.
    PublishAny,
    /// See presence of role and broadcast channels.
    SeePresence,
    /// Decide on moderation queue items.
    ModerateQueues,
    /// Create and edit planning slots.
    ManagePlanning,
    /// Confirm or cancel diffusions on a station's planning.
    ConfirmDiffusions,
    /// Report project events and manage project membership.
    ManageProjects,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Moderator,
        Role::Broadcaster,
        Role::Editor,
        Role::Member,
        Role::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::Broadcaster => "broadcaster",
            Role::Editor => "editor",
            Role::Member => "member",
            Role::Client => "client",
        }
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Admin => &[
                ManageTenant,
                PublishAny,
                SeePresence,
                ModerateQueues,
                ManagePlanning,
                ConfirmDiffusions,
                ManageProjects,
            ],
            Role::Moderator => &[ModerateQueues, SeePresence],
            Role::Broadcaster => &[ConfirmDiffusions],
            Role::Editor => &[ManagePlanning, ManageProjects],
            Role::Member | Role::Client => &[],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (known: admin, moderator, broadcaster, editor, member, client)"))
    }
}

/// Parses the comma-separated form stored in the `users.roles` column.
pub fn parse_roles(stored: &str) -> Vec<Role> {
    stored
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect()
}

/// The stored form of a role list: sorted, deduplicated, comma-separated.
pub fn format_roles(roles: &[Role]) -> String {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_storage_form() {
        let roles = vec![Role::Member, Role::Admin, Role::Member];
        assert_eq!(format_roles(&roles), "admin,member");
        assert_eq!(parse_roles("admin,member"), vec![Role::Admin, Role::Member]);
    }

    #[test]
    fn only_admins_manage_the_tenant() {
        for role in Role::ALL {
            assert_eq!(
                role.permissions().contains(&Permission::ManageTenant),
                role == Role::Admin
            );
        }
    }
}
