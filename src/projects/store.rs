//! Every query on `projects` and `project_members`. Handlers and the channel
//! access check call these functions; they return domain types and
//! [`ProjectError`], never rows.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Member, MemberSpec, Project, ProjectError};
use crate::{
    ids::now_millis,
    store::{Store, is_unique_violation},
};

const PROJECT_COLUMNS: &str = "id, name, external_ref, created_at, updated_at";

const UPSERT_MEMBER: &str = "INSERT INTO project_members (project_id, user_id, tenant_id, role, added_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role";

fn project_from_row(row: &AnyRow) -> Result<Project, sqlx::Error> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        external_ref: row.try_get("external_ref")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        members: None,
    })
}

fn member_from_row(row: &AnyRow) -> Result<Member, sqlx::Error> {
    Ok(Member {
        user_id: row.try_get("user_id")?,
        role: row.try_get("role")?,
        added_at: row.try_get("added_at")?,
    })
}

/// A project with its members; [`ProjectError::NotFound`] when `tenant` has
/// no project `id`.
pub async fn load(store: &Store, tenant: &str, id: &str) -> Result<Project, ProjectError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(ProjectError::NotFound)?;
    let mut project = project_from_row(&row)?;
    let members = sqlx::query(
        "SELECT user_id, role, added_at FROM project_members WHERE tenant_id = $1 AND project_id = $2 ORDER BY added_at, user_id",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(&store.pool)
    .await?;
    project.members = Some(
        members
            .iter()
            .map(member_from_row)
            .collect::<Result<_, _>>()?,
    );
    Ok(project)
}

/// Creates a project and its first members in one transaction, then returns
/// it. A second project with the same `external_ref` is
/// [`ProjectError::Exists`].
pub async fn create(
    store: &Store,
    tenant: &str,
    name: &str,
    external_ref: Option<&str>,
    members: &[MemberSpec],
) -> Result<Project, ProjectError> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_millis();
    let mut tx = store.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO projects (id, tenant_id, name, external_ref, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(name)
    .bind(external_ref)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(ProjectError::Exists),
        Err(e) => return Err(e.into()),
    }
    for m in members {
        sqlx::query(UPSERT_MEMBER)
            .bind(&id)
            .bind(&m.user_id)
            .bind(tenant)
            .bind(&m.role)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    load(store, tenant, &id).await
}

/// One page of projects, by id.
pub struct ProjectPage {
    pub projects: Vec<Project>,
    /// The id to pass as `after` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

/// Up to `limit` of the tenant's projects (without members) by id, after
/// the project `after` when given; only those `member` belongs to when given.
pub async fn list(
    store: &Store,
    tenant: &str,
    member: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<ProjectPage, ProjectError> {
    let mut filter = String::new();
    let mut next = 2;
    if member.is_some() {
        filter.push_str(&format!(
            " AND id IN (SELECT project_id FROM project_members WHERE tenant_id = $1 AND user_id = ${next})"
        ));
        next += 1;
    }
    if after.is_some() {
        filter.push_str(&format!(" AND id > ${next}"));
    }
    let sql = format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = $1{filter} ORDER BY id LIMIT {}",
        limit + 1
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant);
    if let Some(member) = member {
        query = query.bind(member);
    }
    if let Some(after) = after {
        query = query.bind(after);
    }
    let rows = query.fetch_all(&store.pool).await?;
    let mut projects = rows
        .iter()
        .map(project_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if projects.len() > limit {
        projects.truncate(limit);
        projects.last().map(|p| p.id.clone())
    } else {
        None
    };
    Ok(ProjectPage {
        projects,
        next_cursor,
    })
}

/// Renames a project and returns it.
pub async fn rename(
    store: &Store,
    tenant: &str,
    id: &str,
    name: &str,
) -> Result<Project, ProjectError> {
    let done = sqlx::query(
        "UPDATE projects SET name = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(name)
    .bind(now_millis())
    .execute(&store.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ProjectError::NotFound);
    }
    load(store, tenant, id).await
}

/// Deletes a project (its members go with it).
pub async fn delete(store: &Store, tenant: &str, id: &str) -> Result<(), ProjectError> {
    let done = sqlx::query("DELETE FROM projects WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&store.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ProjectError::NotFound);
    }
    Ok(())
}

/// Adds a member, or changes the role of an existing one.
pub async fn put_member(
    store: &Store,
    tenant: &str,
    id: &str,
    member: &MemberSpec,
) -> Result<(), ProjectError> {
    sqlx::query(UPSERT_MEMBER)
        .bind(id)
        .bind(&member.user_id)
        .bind(tenant)
        .bind(&member.role)
        .bind(now_millis())
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// Removes a member; [`ProjectError::MemberNotFound`] when `user` is not one.
pub async fn remove_member(
    store: &Store,
    tenant: &str,
    id: &str,
    user: &str,
) -> Result<(), ProjectError> {
    let done = sqlx::query(
        "DELETE FROM project_members WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(user)
    .execute(&store.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ProjectError::MemberNotFound);
    }
    Ok(())
}

/// `true` if `user` is a member of `project` in `tenant`.
pub async fn is_member(
    store: &Store,
    tenant: &str,
    project: &str,
    user: &str,
) -> Result<bool, ProjectError> {
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
