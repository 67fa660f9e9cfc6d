//! Projects, minimal: a name, an optional reference in the app's own
//! database, and members with a project role. Membership drives who hears
//! about a project (notification recipients) and who may subscribe to its
//! channel (`project:<id>`); app backends report project events (phase,
//! step, task changes) that notify the members.

pub mod routes;

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
use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use crate::{
    auth::{Permission, Principal},
    channels::HistoryPolicy,
    channels::{Access, AccessCheck, ChannelName, KeyRule, Namespace},
    store::Store,
};

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

pub const PROJECT_COLUMNS: &str = "id, name, external_ref, created_at, updated_at";

pub fn project_from_row(row: &AnyRow) -> Result<Project, sqlx::Error> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        external_ref: row.try_get("external_ref")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        members: None,
    })
}

/// `true` if `user` is a member of `project` in `tenant`.
pub async fn is_member(
    store: &Store,
    tenant: &str,
    project: &str,
    user: &str,
) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "SELECT 1 AS x FROM project_members WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3",
    )
    .bind(tenant)
    .bind(project)
    .bind(user)
    .fetch_optional(&store.pool)
    .await?
    .is_some())
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
            is_member(&self.0, who.tenant.as_str(), project, who.user.as_str()).await
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
