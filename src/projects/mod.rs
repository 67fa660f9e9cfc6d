//! Projects, minimal: a name, an optional reference in the app's own
//! database, and members with a project role. Membership drives who hears
//! about a project (notification recipients) and who may subscribe to its
//! channel (`project:<id>`); app backends report project events (phase,
//! step, task changes) that notify the members.

pub mod routes;
pub mod store;

/// The projects module: the `project:` namespace and the project routes.
pub fn module(ctx: &crate::module::Context<'_>) -> anyhow::Result<Arc<dyn crate::module::Module>> {
    Ok(Arc::new(ProjectsModule(ctx.store.clone())))
}

struct ProjectsModule(Store);

impl crate::module::Module for ProjectsModule {
    fn name(&self) -> &'static str {
        "projects"
    }
    fn extend(&self, extensions: &mut crate::gateway::Extensions) {
        extensions.channels.register(namespace(self.0.clone()));
    }
    fn router(&self) -> axum::Router<crate::state::AppState> {
        routes::router()
    }
}

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Permission, Principal},
    channels::HistoryPolicy,
    channels::{Access, AccessCheck, ChannelName, KeyRule, Namespace},
    error::ApiError,
    notify::types::validate_key,
    store::Store,
};

/// Why a projects operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("project not found")]
    NotFound,
    #[error("project member not found")]
    MemberNotFound,
    #[error("a project with this external_ref exists")]
    Exists,
    #[error("name: 1-200 characters")]
    InvalidName,
    #[error("role: {0}")]
    InvalidRole(String),
    #[error("event: {0}")]
    InvalidEvent(String),
    #[error("payload must be a JSON object")]
    InvalidPayload,
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl ProjectError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ProjectError::NotFound | ProjectError::MemberNotFound => "not_found",
            ProjectError::Exists => "project_exists",
            ProjectError::InvalidName => "invalid_project",
            ProjectError::InvalidRole(_) => "invalid_member",
            ProjectError::InvalidEvent(_) => "invalid_event",
            ProjectError::InvalidPayload => "invalid_payload",
            ProjectError::Store(_) => "internal",
        }
    }
}

impl From<ProjectError> for ApiError {
    fn from(e: ProjectError) -> Self {
        let code = e.code();
        match e {
            ProjectError::NotFound => ApiError::NotFound("project"),
            ProjectError::MemberNotFound => ApiError::NotFound("project member"),
            ProjectError::Exists => ApiError::conflict(code, e.to_string()),
            ProjectError::InvalidName
            | ProjectError::InvalidRole(_)
            | ProjectError::InvalidEvent(_)
            | ProjectError::InvalidPayload => ApiError::invalid(code, e.to_string()),
            ProjectError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub external_ref: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
}

#[derive(Debug, Serialize)]
pub struct Member {
    pub user_id: String,
    pub role: String,
    pub added_at: i64,
}

/// A user to make a member, with their project role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub user_id: String,
    #[serde(default = "default_role")]
    pub role: String,
}

/// The project role of a member added without one.
pub fn default_role() -> String {
    "member".into()
}

/// A project name: 1-200 characters, not only spaces.
pub fn check_name(name: &str) -> Result<(), ProjectError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ProjectError::InvalidName);
    }
    Ok(())
}

/// A project role has the shape of a notification type key.
pub fn check_role(role: &str) -> Result<(), ProjectError> {
    validate_key(role).map_err(ProjectError::InvalidRole)
}

/// A project event (`phase_changed`…) has the shape of a notification type key.
pub fn check_event(event: &str) -> Result<(), ProjectError> {
    validate_key(event).map_err(ProjectError::InvalidEvent)
}

/// Channel access for `project:<id>`: members, and users who manage projects.
struct Members(Store);

impl AccessCheck for Members {
    fn allows<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            if who.can(Permission::ManageProjects) {
                return Ok(true);
            }
            let Some(project) = channel.key() else {
                return Ok(false);
            };
            Ok(store::is_member(&self.0, who.tenant.as_str(), project, who.user.as_str()).await?)
        })
    }
}

/// The `project:` namespace: members subscribe and see presence; the app
/// backend publishes (REST, `publish` scope) and so do project events.
pub fn namespace(store: Store) -> Namespace {
    let members = Access::Check(Arc::new(Members(store)));
    Namespace {
        name: "project",
        key: KeyRule::Required,
        subscribe: members.clone(),
        publish: Access::Nobody,
        presence: members,
        join_leave: true,
        history: HistoryPolicy {
            size: 100,
            ttl: Duration::from_secs(24 * 3600),
        },
        hook: None,
        snapshot: None,
    }
}

#[cfg(test)]
mod tests {

    use super::ProjectError;

    #[test]
    fn each_project_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                ProjectError::NotFound,
                404,
                "not_found",
                "project not found",
            ),
            (
                ProjectError::MemberNotFound,
                404,
                "not_found",
                "project member not found",
            ),
            (
                ProjectError::Exists,
                409,
                "project_exists",
                "a project with this external_ref exists",
            ),
            (
                ProjectError::InvalidName,
                422,
                "invalid_project",
                "name: 1-200 characters",
            ),
            (
                ProjectError::InvalidRole("too long".into()),
                422,
                "invalid_member",
                "role: too long",
            ),
            (
                ProjectError::InvalidEvent("too long".into()),
                422,
                "invalid_event",
                "event: too long",
            ),
            (
                ProjectError::InvalidPayload,
                422,
                "invalid_payload",
                "payload must be a JSON object",
            ),
            (
                ProjectError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }
}
