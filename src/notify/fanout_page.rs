//! One page of a fan-out: reading the next recipients and planning what
//! each receives (preferences, locale, rendered texts), then writing it all
//! in one transaction: inbox rows, counters, outbox emails and the
//! trigger's progress. Kept apart from the worker's pacing
//! ([`super::fanout`]) because this is where the crash-safety and
//! idempotency of a page are decided.

use std::collections::{BTreeMap, HashMap};

use serde_json::value::RawValue;
use sqlx::{AnyConnection, AssertSqlSafe};

use super::{
    Notify,
    counts::{self, Delta},
    email_guard::kind,
    email_render,
    fanout::{Claimed, Event},
    inbox::Item,
    parse_stored,
    prefs::{EmailPlan, Preferences, plan},
    recipients::Recipient,
    template::Context,
    types::Locale,
    unsubscribe::Stop,
};
use crate::{
    email::{self, NewEmail},
    ids::now_millis,
    store::{
        Backend,
        json_rows::{self, Column, backend_of},
    },
};

/// Preferences of many users in one query (defaults for those without).
pub async fn load_preferences(
    conn: &mut AnyConnection,
    tenant: &str,
    users: &[&str],
) -> Result<HashMap<String, Preferences>, sqlx::Error> {
    let mut out = HashMap::new();
    if users.is_empty() {
        return Ok(out);
    }
    let backend = backend_of(conn);
    let sql = format!(
        "SELECT {} FROM notification_preferences WHERE tenant_id = $1 AND user_id IN ({})",
        json_rows::aggregate(backend, &["user_id", "settings"]),
        json_rows::strings(backend, 2)
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(json_rows::encode(users)?)
        .fetch_one(conn)
        .await?;
    for (user, settings) in json_rows::decode::<(String, String)>(&row)? {
        out.insert(user, parse_stored(&settings));
    }
    Ok(out)
}

/// One recipient of a page, with what the preferences decided and the
/// texts rendered in their locale.
pub(super) struct Planned {
    recipient: Recipient,
    locale: Locale,
    email: EmailPlan,
    in_app: bool,
    title: String,
    body: String,
    url: Option<String>,
}

/// The next page of recipients after `after`, planned and rendered, or
/// `None` when the trigger has reached its last recipient. Reads only.
pub(super) struct Page {
    planned: Vec<Planned>,
    /// Recipients on the page, delivered to or not.
    pub(super) recipients: usize,
    /// The greatest user id of the page: where the next one starts.
    pub(super) last: String,
}

pub(super) async fn read_page(
    notify: &Notify,
    trigger: &Claimed,
    after: &str,
) -> anyhow::Result<Option<Page>> {
    let tenant = trigger.tenant.as_str();
    let Some((recipients, last)) = trigger
        .spec
        .page(
            &notify.store,
            tenant,
            trigger.actor.as_deref(),
            after,
            notify.config.fanout_batch,
        )
        .await?
    else {
        return Ok(None);
    };
    let ty = &trigger.ty;
    let mut conn = notify.store.pool.acquire().await?;
    let ids: Vec<&str> = recipients.iter().map(|r| r.id.as_str()).collect();
    let prefs = load_preferences(&mut conn, tenant, &ids).await?;
    drop(conn);
    let default_prefs = Preferences::default();
    let default_locale = notify.default_locale();
    let count = recipients.len();
    let mut planned = Vec::with_capacity(count);
    for r in recipients {
        let p = prefs.get(&r.id).unwrap_or(&default_prefs);
        let decision = plan(&ty.def, p);
        if !decision.delivers() {
            continue;
        }
        let locale = p.locale.unwrap_or(default_locale);
        let ctx = Context {
            payload: &trigger.payload_value,
            recipient_name: &r.name,
            recipient_email: &r.email,
        };
        let texts = ty.texts(locale);
        let (title, body) = (
            texts.title.render(&ctx, false),
            texts.body.render(&ctx, false),
        );
        let url = ty.url.as_ref().map(|u| u.render(&ctx, false));
        planned.push(Planned {
            recipient: r,
            locale,
            email: decision.email,
            in_app: decision.in_app,
            title,
            body,
            url,
        });
    }
    Ok(Some(Page {
        planned,
        recipients: count,
        last,
    }))
}

/// One page in one transaction: inbox rows, counters, outbox emails and the
/// trigger's progress, which advances to `resume_to`. Rows that already
/// exist (a page redone after a crash or a lost lease) are skipped by the
/// unique `(trigger_id, user_id)`, with their emails and counters.
pub(super) async fn write_page(
    notify: &Notify,
    trigger: &Claimed,
    page: &Page,
    resume_to: &str,
) -> anyhow::Result<(Vec<Event>, u64)> {
    let tenant = trigger.tenant.as_str();
    let now = notify.clock.now_millis();
    let ty = &trigger.ty;
    let def = &ty.def;
    let planned = &page.planned;
    let lease_until = now_millis() + notify.config.lease.as_millis() as i64;
    let mut tx = notify.store.pool.begin().await?;
    if notify.store.backend == Backend::Sqlite {
        // A write as the first statement takes SQLite's write lock up front,
        // so this transaction never has to upgrade a read lock (which fails
        // at once if another connection wrote meanwhile). PostgreSQL leaves
        // the trigger row alone until the end: concurrent pages of the same
        // trigger then wait on its row lock only for the other's commit.
        sqlx::query("UPDATE notification_triggers SET lease_until = $2 WHERE id = $1")
            .bind(&trigger.id)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?;
    }

    let in_app: Vec<&Planned> = planned.iter().filter(|p| p.in_app).collect();
    let mut created: HashMap<String, i64> = HashMap::with_capacity(in_app.len());
    if !in_app.is_empty() {
        let rows: Vec<(&str, &str, &str, Option<&str>)> = in_app
            .iter()
            .map(|p| {
                (
                    p.recipient.id.as_str(),
                    p.title.as_str(),
                    p.body.as_str(),
                    p.url.as_deref(),
                )
            })
            .collect();
        let rows_sql = json_rows::select(
            notify.store.backend,
            8,
            &[
                Column::Text("user_id"),
                Column::Text("title"),
                Column::Text("body"),
                Column::Text("url"),
            ],
        );
        // `WHERE TRUE`: see `counts::apply`.
        let insert = format!(
            "INSERT INTO notifications (tenant_id, user_id, trigger_id, type_key, category, priority, title, body, url, payload, created_at) \
             SELECT $1, r.user_id, $2, $3, $4, $5, r.title, r.body, r.url, $6, $7 FROM ({rows_sql}) r WHERE TRUE \
             ON CONFLICT (trigger_id, user_id) DO NOTHING"
        );
        let bind = |sql: String| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(tenant)
                .bind(&trigger.id)
                .bind(&def.key)
                .bind(&def.category)
                .bind(def.priority.rank())
                .bind(&trigger.payload)
                .bind(now)
        };
        // The ids of the rows this statement created (not those a redone
        // page finds already there), as one aggregated row.
        let ids = json_rows::aggregate(notify.store.backend, &["user_id", "id"]);
        let inserted = match notify.store.backend {
            Backend::Postgres => {
                let sql =
                    format!("WITH ins AS ({insert} RETURNING id, user_id) SELECT {ids} FROM ins");
                bind(sql)
                    .bind(json_rows::encode(&rows)?)
                    .fetch_one(&mut *tx)
                    .await?
            }
            // SQLite has no INSERT in a WITH. This transaction holds the
            // write lock (its first statement wrote), so the rows above the
            // current greatest id are exactly the ones it inserts.
            Backend::Sqlite => {
                let floor: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM notifications")
                        .fetch_one(&mut *tx)
                        .await?;
                bind(insert)
                    .bind(json_rows::encode(&rows)?)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {ids} FROM notifications WHERE id > $1 AND trigger_id = $2"
                )))
                .bind(floor)
                .bind(&trigger.id)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        created.extend(json_rows::decode::<(String, i64)>(&inserted)?);
    }

    let deltas: BTreeMap<(String, String), Delta> = created
        .keys()
        .map(|user| {
            (
                (user.clone(), def.category.clone()),
                Delta {
                    unread: 1,
                    unseen: 1,
                    ..Delta::default()
                },
            )
        })
        .collect();
    counts::apply(&mut tx, tenant, &deltas).await?;

    let mut emails = Vec::new();
    for p in planned {
        let notification_id = created.get(&p.recipient.id).copied();
        // In-app copy already there: this page was committed before.
        if p.in_app && notification_id.is_none() {
            continue;
        }
        let (kind, send_after) = match p.email {
            EmailPlan::None | EmailPlan::Digest => continue,
            EmailPlan::Now => (kind::NOTIFICATION, now),
            EmailPlan::Fallback => (
                kind::FALLBACK,
                now + notify.email.fallback_delay.as_millis() as i64,
            ),
        };
        let ctx = Context {
            payload: &trigger.payload_value,
            recipient_name: &p.recipient.name,
            recipient_email: &p.recipient.email,
        };
        let link = p.url.as_deref().map(|u| notify.absolute(u));
        let preferences = notify.preferences_link();
        let rendered =
            email_render::notification(ty, p.locale, &ctx, link.as_deref(), preferences.as_deref());
        // Emails the recipient cannot (mandatory) or should not (critical)
        // opt out of from their mail client carry no `List-Unsubscribe`.
        let critical = def.priority == super::types::Priority::Critical;
        let list_unsubscribe = preferences.filter(|_| !def.mandatory && !critical);
        // The same emails get a one-click address that stops the category's
        // emails (when the public URL makes an `https` one).
        let one_click_unsubscribe = list_unsubscribe.as_ref().and_then(|_| {
            notify.one_click_link(
                tenant,
                &p.recipient.id,
                Stop::Category(def.category.clone()),
            )
        });
        emails.push(NewEmail {
            tenant: tenant.to_owned(),
            user: p.recipient.id.clone(),
            cause_id: notification_id,
            kind,
            dedupe_key: format!("n:{}:{}:email", trigger.id, p.recipient.id),
            to: p.recipient.email.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            critical,
            send_after,
            list_unsubscribe,
            one_click_unsubscribe,
        });
    }
    let emailed = email::insert_many(&mut tx, &emails, now).await?;

    // `resume_after` only moves forward, and only to the end of a page known
    // to be committed (`resume_to`); `processed` counts a page redone after
    // a lost lease twice, hence the cap.
    sqlx::query(
        "UPDATE notification_triggers SET \
         resume_after = CASE WHEN resume_after < $2 THEN $2 ELSE resume_after END, \
         processed = CASE WHEN processed + $3 > total THEN total ELSE processed + $3 END, \
         created_count = created_count + $4, updated_at = $5, lease_until = $6 WHERE id = $1",
    )
    .bind(&trigger.id)
    .bind(resume_to)
    .bind(page.recipients as i64)
    .bind(created.len() as i64)
    .bind(now)
    .bind(lease_until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    notify
        .metrics
        .notifications_created
        .inc_by(created.len() as u64);

    let events = in_app
        .iter()
        .filter_map(|p| {
            let id = *created.get(&p.recipient.id)?;
            Some(Event {
                user: p.recipient.id.clone(),
                item: Item {
                    id,
                    type_key: def.key.clone(),
                    category: def.category.clone(),
                    priority: def.priority,
                    title: p.title.clone(),
                    body: p.body.clone(),
                    url: p.url.clone(),
                    data: RawValue::from_string(trigger.payload.clone()).ok()?,
                    status: "unread",
                    seen_at: None,
                    read_at: None,
                    archived_at: None,
                    created_at: now,
                },
            })
        })
        .collect();
    Ok((events, emailed))
}
