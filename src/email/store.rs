//! Every query of the tenant admin's view of the outbox, on `emails` and
//! `email_attempts`. The admin routes call these functions; they return
//! typed emails and attempts and [`EmailAdminError`], never rows.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use crate::{error::ApiError, store::Store};

/// Why an admin operation on the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum EmailAdminError {
    /// The status filter names no status.
    #[error("status: pending, sent, cancelled or dead")]
    InvalidStatus,
    /// The tenant has no email with this id.
    #[error("email not found")]
    NotFound,
    /// Only a dead-lettered email can be retried.
    #[error("only a dead-lettered email can be retried")]
    NotDead,
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl EmailAdminError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            EmailAdminError::InvalidStatus => "invalid_filter",
            EmailAdminError::NotFound => "not_found",
            EmailAdminError::NotDead => "not_dead",
            EmailAdminError::Store(_) => "internal",
        }
    }
}

impl From<EmailAdminError> for ApiError {
    fn from(e: EmailAdminError) -> Self {
        let code = e.code();
        match e {
            EmailAdminError::InvalidStatus => ApiError::invalid(code, e.to_string()),
            EmailAdminError::NotFound => ApiError::NotFound("email"),
            EmailAdminError::NotDead => ApiError::conflict(code, e.to_string()),
            EmailAdminError::Store(e) => e.into(),
        }
    }
}

/// The status of an outbox email, as the admin filters by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Sent,
    Cancelled,
    /// Dead-lettered: out of attempts, or refused for good.
    Dead,
}

impl Status {
    pub fn parse(s: &str) -> Result<Status, EmailAdminError> {
        match s {
            "pending" => Ok(Status::Pending),
            "sent" => Ok(Status::Sent),
            "cancelled" => Ok(Status::Cancelled),
            "dead" => Ok(Status::Dead),
            _ => Err(EmailAdminError::InvalidStatus),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::Cancelled => "cancelled",
            Status::Dead => "dead",
        }
    }
}

/// An outbox email without its texts.
#[derive(Debug, Clone)]
pub struct Email {
    pub id: String,
    pub user_id: String,
    pub notification_id: Option<i64>,
    pub kind: String,
    pub to_address: String,
    pub subject: String,
    pub status: String,
    pub attempts: i64,
    pub send_after: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// One logged send attempt of an email.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i64,
    pub finished_at: i64,
    pub outcome: String,
    pub smtp_code: Option<i64>,
    pub detail: String,
}

/// One page of emails, newest first.
#[derive(Debug)]
pub struct EmailPage {
    pub emails: Vec<Email>,
    /// The id to pass as `before` for the next page, if there is one.
    pub next_cursor: Option<String>,
}

const COLUMNS: &str = "id, user_id, notification_id, kind, to_address, subject, status, attempts, send_after, last_error, created_at, sent_at";

fn email_from_row(row: &AnyRow) -> Result<Email, sqlx::Error> {
    Ok(Email {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        notification_id: row.try_get("notification_id")?,
        kind: row.try_get("kind")?,
        to_address: row.try_get("to_address")?,
        subject: row.try_get("subject")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        send_after: row.try_get("send_after")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

fn attempt_from_row(row: &AnyRow) -> Result<Attempt, sqlx::Error> {
    Ok(Attempt {
        attempt: row.try_get("attempt")?,
        finished_at: row.try_get("finished_at")?,
        outcome: row.try_get("outcome")?,
        smtp_code: row.try_get("smtp_code")?,
        detail: row.try_get("detail")?,
    })
}

/// Up to `limit` of the tenant's emails with `status`, newest first, older
/// than the email `before` when given.
pub async fn list(
    store: &Store,
    tenant: &str,
    status: Status,
    before: Option<&str>,
    limit: usize,
) -> Result<EmailPage, EmailAdminError> {
    // Ids are UUIDv7: ordered by creation, so they serve as the cursor.
    let after = if before.is_some() { " AND id < $3" } else { "" };
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM emails WHERE tenant_id = $1 AND status = $2{after} ORDER BY id DESC LIMIT {}",
        limit + 1
    )))
    .bind(tenant)
    .bind(status.as_str());
    let rows = match before {
        Some(cursor) => rows.bind(cursor),
        None => rows,
    }
    .fetch_all(&store.pool)
    .await?;
    let mut emails = rows
        .iter()
        .map(email_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if emails.len() > limit {
        emails.truncate(limit);
        emails.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(EmailPage {
        emails,
        next_cursor,
    })
}

/// One of the tenant's emails; [`EmailAdminError::NotFound`] when it has
/// no email `id`.
pub async fn get(store: &Store, tenant: &str, id: &str) -> Result<Email, EmailAdminError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM emails WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(EmailAdminError::NotFound)?;
    Ok(email_from_row(&row)?)
}

/// One of the tenant's emails with its attempt log, oldest attempt first.
pub async fn get_with_attempts(
    store: &Store,
    tenant: &str,
    id: &str,
) -> Result<(Email, Vec<Attempt>), EmailAdminError> {
    let email = get(store, tenant, id).await?;
    let rows = sqlx::query(
        "SELECT attempt, finished_at, outcome, smtp_code, detail FROM email_attempts WHERE email_id = $1 AND tenant_id = $2 ORDER BY id",
    )
    .bind(id)
    .bind(tenant)
    .fetch_all(&store.pool)
    .await?;
    let attempts = rows
        .iter()
        .map(attempt_from_row)
        .collect::<Result<_, _>>()?;
    Ok((email, attempts))
}

/// Puts a dead email back in the queue, due at `now`, with a fresh set of
/// attempts. [`EmailAdminError::NotDead`] when the email exists but is not
/// dead, [`EmailAdminError::NotFound`] when the tenant has no email `id`.
pub async fn revive(
    store: &Store,
    tenant: &str,
    id: &str,
    now: i64,
) -> Result<(), EmailAdminError> {
    let done = sqlx::query(
        "UPDATE emails SET status = 'pending', attempts = 0, send_after = $3, lease_until = 0, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND status = 'dead'",
    )
    .bind(tenant)
    .bind(id)
    .bind(now)
    .execute(&store.pool)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(());
    }
    let exists = sqlx::query("SELECT 1 AS x FROM emails WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(&store.pool)
        .await?;
    Err(match exists {
        Some(_) => EmailAdminError::NotDead,
        None => EmailAdminError::NotFound,
    })
}

/// Emails still to send across all tenants: `(due, scheduled)`, those whose
/// `send_after` has come by `now` (the outbox clock) and the others. Two
/// counts on the `(status, send_after)` index, for the backlog gauge.
pub async fn backlog(store: &Store, now: i64) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM emails WHERE status = 'pending' AND send_after <= $1) AS due, \
         (SELECT COUNT(*) FROM emails WHERE status = 'pending' AND send_after > $1) AS scheduled",
    )
    .bind(now)
    .fetch_one(&store.pool)
    .await?;
    Ok((row.try_get("due")?, row.try_get("scheduled")?))
}

#[cfg(test)]
mod tests {

    use super::{EmailAdminError, Status};

    #[test]
    fn each_email_admin_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                EmailAdminError::InvalidStatus,
                422,
                "invalid_filter",
                "status: pending, sent, cancelled or dead",
            ),
            (
                EmailAdminError::NotFound,
                404,
                "not_found",
                "email not found",
            ),
            (
                EmailAdminError::NotDead,
                409,
                "not_dead",
                "only a dead-lettered email can be retried",
            ),
            (
                EmailAdminError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }

    #[test]
    fn a_status_filter_reads_back_as_itself() {
        for status in [
            Status::Pending,
            Status::Sent,
            Status::Cancelled,
            Status::Dead,
        ] {
            assert_eq!(Status::parse(status.as_str()).unwrap(), status);
        }
        assert!(matches!(
            Status::parse("failed"),
            Err(EmailAdminError::InvalidStatus)
        ));
    }
}
