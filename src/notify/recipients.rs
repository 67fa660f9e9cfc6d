//! Who a trigger reaches: explicit users, everyone holding a role, the
//! members of projects, or the whole tenant (any combination, deduplicated).
//!
//! The fan-out never loads the whole audience: it walks matching users in id
//! order, one page per transaction, so a trigger to 100,000 users costs the
//! same memory as one to 1,000, and a crashed fan-out resumes after the last
//! user it committed.

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};

use crate::{
    auth::Role,
    error::{ApiError, ApiResult},
    ids::TenantId,
    store::{Store, json_rows},
};

/// Explicit user ids one trigger may list (roles, projects and `all` reach more).
pub const MAX_EXPLICIT: usize = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Every active user of the tenant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// One resolved recipient.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub id: String,
    pub email: String,
    pub name: String,
}

impl RecipientSpec {
    /// Refuses empty, oversized or dangling specs with a precise error.
    pub async fn validate(&mut self, store: &Store, tenant: &TenantId) -> ApiResult<()> {
        self.users.sort();
        self.users.dedup();
        self.roles.sort();
        self.roles.dedup();
        self.projects.sort();
        self.projects.dedup();
        if !self.all && self.users.is_empty() && self.roles.is_empty() && self.projects.is_empty() {
            return Err(ApiError::invalid(
                "no_recipients",
                "recipients: give users, roles, projects or all",
            ));
        }
        if self.users.len() > MAX_EXPLICIT || self.projects.len() > 100 {
            return Err(ApiError::invalid(
                "too_many_recipients",
                format!(
                    "recipients: at most {MAX_EXPLICIT} users and 100 projects per trigger; use roles, projects or all for more"
                ),
            ));
        }
        for role in &self.roles {
            role.parse::<Role>()
                .map_err(|e| ApiError::invalid("unknown_role", e))?;
        }
        let missing = missing(store, tenant, "users", &self.users).await?;
        if !missing.is_empty() {
            return Err(ApiError::invalid(
                "unknown_recipients",
                format!(
                    "recipients.users: no such user in this tenant: {}",
                    missing.join(", ")
                ),
            ));
        }
        let missing = missing_projects(store, tenant, &self.projects).await?;
        if !missing.is_empty() {
            return Err(ApiError::invalid(
                "unknown_project",
                format!(
                    "recipients.projects: no such project: {}",
                    missing.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// `WHERE` conditions matching the spec's users; binds start at `$4`
    /// (`$1` tenant, `$2` resume-after id, `$3` excluded actor).
    fn condition(&self) -> (String, Vec<String>) {
        if self.all {
            return ("TRUE".into(), Vec::new());
        }
        let mut parts = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let next = |binds: &mut Vec<String>, value: String| {
            binds.push(value);
            format!("${}", binds.len() + 3)
        };
        if !self.users.is_empty() {
            let list: Vec<String> = self
                .users
                .iter()
                .map(|u| next(&mut binds, u.clone()))
                .collect();
            parts.push(format!("u.id IN ({})", list.join(", ")));
        }
        for role in &self.roles {
            let p = next(&mut binds, format!("%,{role},%"));
            parts.push(format!("(',' || u.roles || ',') LIKE {p}"));
        }
        if !self.projects.is_empty() {
            let list: Vec<String> = self
                .projects
                .iter()
                .map(|p| next(&mut binds, p.clone()))
                .collect();
            parts.push(format!(
                "u.id IN (SELECT m.user_id FROM project_members m WHERE m.tenant_id = $1 AND m.project_id IN ({}))",
                list.join(", ")
            ));
        }
        (format!("({})", parts.join(" OR ")), binds)
    }

    /// How many active users the spec reaches, `actor` excluded.
    pub async fn count(
        &self,
        store: &Store,
        tenant: &TenantId,
        actor: Option<&str>,
    ) -> ApiResult<i64> {
        let (cond, binds) = self.condition();
        let sql = format!(
            "SELECT COUNT(*) AS n FROM users u WHERE u.tenant_id = $1 AND u.disabled_at IS NULL AND u.id > $2 AND u.id <> $3 AND {cond}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind("")
            .bind(actor.unwrap_or(""));
        for b in binds {
            q = q.bind(b);
        }
        Ok(q.fetch_one(&store.pool).await?.try_get::<i64, _>("n")?)
    }

    /// The next `limit` recipients after user id `after`, and the greatest
    /// id among them (where the next page starts), or `None` when none is left.
    pub async fn page(
        &self,
        store: &Store,
        tenant: &str,
        actor: Option<&str>,
        after: &str,
        limit: usize,
    ) -> ApiResult<Option<(Vec<Recipient>, String)>> {
        let (cond, binds) = self.condition();
        // One aggregated row rather than `limit` rows: see `json_rows`.
        let sql = format!(
            "SELECT MAX(r.id) AS last, {} FROM (SELECT u.id, u.email, u.display_name FROM users u WHERE u.tenant_id = $1 AND u.disabled_at IS NULL AND u.id > $2 AND u.id <> $3 AND {cond} ORDER BY u.id LIMIT {limit}) r",
            json_rows::aggregate(store.backend, &["r.id", "r.email", "r.display_name"])
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(after)
            .bind(actor.unwrap_or(""));
        for b in binds {
            q = q.bind(b);
        }
        let row = q.fetch_one(&store.pool).await?;
        // The database's MAX, not the last element: an aggregate need not
        // keep the subquery's order, and only the database's collation
        // agrees with its own `u.id > $2`.
        let Some(last) = row.try_get::<Option<String>, _>("last")? else {
            return Ok(None);
        };
        let page = json_rows::decode::<(String, String, String)>(&row)?
            .into_iter()
            .map(|(id, email, name)| Recipient { id, email, name })
            .collect();
        Ok(Some((page, last)))
    }
}

/// Ids among `ids` that name no row of `table` in the tenant.
async fn missing(
    store: &Store,
    tenant: &TenantId,
    table: &str,
    ids: &[String],
) -> ApiResult<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT id FROM {table} WHERE tenant_id = $1 AND id IN ({})",
        list.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str());
    for id in ids {
        q = q.bind(id);
    }
    let found: std::collections::HashSet<String> = q
        .fetch_all(&store.pool)
        .await?
        .iter()
        .filter_map(|r| r.try_get::<String, _>("id").ok())
        .collect();
    Ok(ids
        .iter()
        .filter(|id| !found.contains(*id))
        .cloned()
        .collect())
}

pub async fn missing_projects(
    store: &Store,
    tenant: &TenantId,
    ids: &[String],
) -> ApiResult<Vec<String>> {
    missing(store, tenant, "projects", ids).await
}
