//! Broadcast planning: stations, each in its own time zone, and the slots in
//! which advertisers' spots are to be broadcast. Planners (editors, admins,
//! backends with the `planning` scope) plan slots one by one or a whole day
//! at a time; broadcasters confirm them, report them aired, missed, or
//! cancel them, and the advertiser hears about it. Broadcasters' consoles
//! follow a station live on `planning:<station id>`: a snapshot of a window
//! on subscribe, then every change with its version.
//!
//! The rules live where concurrent writers cannot break them: no two
//! non-cancelled slots of a station overlap (an exclusion constraint on
//! PostgreSQL, triggers on SQLite), and every change is a compare-and-set on
//! the slot's version.

pub mod export;
pub mod routes;
pub mod store;

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use jiff::{Timestamp, ToSpan, Zoned, civil::Date, tz::TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    auth::{Permission, Principal},
    bus::Position,
    channels::{Access, ChannelKey, HistoryPolicy, KeyRule, Namespace},
    error::ApiError,
    extension::{DomainError, SnapshotSource},
    store::Store,
};

/// The planning module: the `planning:` namespace and the planning routes.
pub fn module(ctx: &crate::module::Context<'_>) -> anyhow::Result<Arc<dyn crate::module::Module>> {
    Ok(Arc::new(PlanningModule(ctx.store.clone())))
}

struct PlanningModule(Store);

impl crate::module::Module for PlanningModule {
    fn name(&self) -> &'static str {
        "planning"
    }
    fn extend(&self, extensions: &mut crate::gateway::Extensions) {
        extensions.channels.register(namespace(self.0.clone()));
    }
    fn router(&self) -> axum::Router<crate::state::AppState> {
        routes::router()
    }
}

/// Why a planning operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    #[error("station not found")]
    StationNotFound,
    #[error("slot not found")]
    SlotNotFound,
    #[error("a station with this external_ref exists")]
    StationExists,
    #[error("{0}")]
    InvalidStation(String),
    #[error("{0}")]
    InvalidSlot(String),
    #[error("{0}")]
    InvalidWindow(String),
    /// The slot would overlap a non-cancelled slot of its station.
    #[error("{}", overlap_message(.0.as_deref()))]
    Overlap(Option<Box<Slot>>),
    /// The slot changed since the version the caller holds.
    #[error("version {expected} is not the current version {current}")]
    VersionMismatch { expected: i64, current: i64 },
    #[error("changing a slot requires If-Match with its version (or `version` in the body)")]
    PreconditionRequired,
    #[error("a slot that is {from} cannot be {action}")]
    InvalidTransition {
        from: &'static str,
        action: &'static str,
    },
    #[error("{0} row(s) of the plan are not valid; nothing was written")]
    ImportFailed(usize),
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

fn overlap_message(slot: Option<&Slot>) -> String {
    match slot {
        Some(s) => format!(
            "the slot overlaps slot {} ({} to {}) of the station",
            s.id, s.starts_at, s.ends_at
        ),
        None => "the slot overlaps another slot of the station".into(),
    }
}

impl PlanningError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            PlanningError::StationNotFound | PlanningError::SlotNotFound => "not_found",
            PlanningError::StationExists => "station_exists",
            PlanningError::InvalidStation(_) => "invalid_station",
            PlanningError::InvalidSlot(_) => "invalid_slot",
            PlanningError::InvalidWindow(_) => "invalid_window",
            PlanningError::Overlap(_) => "slot_overlap",
            PlanningError::VersionMismatch { .. } => "version_mismatch",
            PlanningError::PreconditionRequired => "precondition_required",
            PlanningError::InvalidTransition { .. } => "invalid_transition",
            PlanningError::ImportFailed(_) => "import_failed",
            PlanningError::Store(_) => "internal",
        }
    }
}

impl From<PlanningError> for ApiError {
    fn from(e: PlanningError) -> Self {
        let code = e.code();
        match e {
            PlanningError::StationNotFound => ApiError::NotFound("station"),
            PlanningError::SlotNotFound => ApiError::NotFound("slot"),
            PlanningError::StationExists
            | PlanningError::Overlap(_)
            | PlanningError::InvalidTransition { .. } => ApiError::conflict(code, e.to_string()),
            PlanningError::InvalidStation(_)
            | PlanningError::InvalidSlot(_)
            | PlanningError::InvalidWindow(_)
            | PlanningError::ImportFailed(_) => ApiError::invalid(code, e.to_string()),
            PlanningError::VersionMismatch { .. } => {
                ApiError::PreconditionFailed(code, e.to_string())
            }
            PlanningError::PreconditionRequired => {
                ApiError::PreconditionRequired(code, e.to_string())
            }
            PlanningError::Store(e) => e.into(),
        }
    }
}

impl From<PlanningError> for DomainError {
    fn from(e: PlanningError) -> Self {
        let code = e.code();
        match e {
            PlanningError::StationNotFound | PlanningError::SlotNotFound => {
                DomainError::not_found(code, e.to_string())
            }
            PlanningError::InvalidWindow(_) => DomainError::invalid(code, e.to_string()),
            PlanningError::Store(e) => DomainError::internal(e),
            other => DomainError::conflict(code, other.to_string()),
        }
    }
}

/// A station: where slots are broadcast, in its own time zone.
#[derive(Debug, Clone, Serialize)]
pub struct Station {
    pub id: String,
    pub name: String,
    /// An IANA time zone (`Europe/Paris`): days, exports and notifications
    /// are in it.
    pub time_zone: String,
    pub external_ref: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Station {
    /// The station's time zone (checked when the station was written).
    pub fn tz(&self) -> TimeZone {
        TimeZone::get(&self.time_zone).unwrap_or(TimeZone::UTC)
    }
}

/// What a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Planned,
    Confirmed,
    Aired,
    Cancelled,
    Missed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Confirmed => "confirmed",
            Status::Aired => "aired",
            Status::Cancelled => "cancelled",
            Status::Missed => "missed",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "planned" => Status::Planned,
            "confirmed" => Status::Confirmed,
            "aired" => Status::Aired,
            "cancelled" => Status::Cancelled,
            "missed" => Status::Missed,
            _ => return None,
        })
    }
    /// Whether the slot's content and time may still be edited.
    pub fn editable(self) -> bool {
        matches!(self, Status::Planned | Status::Confirmed)
    }
}

/// A broadcaster's action on a slot, and the status it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Confirm,
    Air,
    Cancel,
    Miss,
}

impl Action {
    pub fn target(self) -> Status {
        match self {
            Action::Confirm => Status::Confirmed,
            Action::Air => Status::Aired,
            Action::Cancel => Status::Cancelled,
            Action::Miss => Status::Missed,
        }
    }
    fn verb(self) -> &'static str {
        match self {
            Action::Confirm => "confirmed",
            Action::Air => "reported aired",
            Action::Cancel => "cancelled",
            Action::Miss => "reported missed",
        }
    }
    /// The transitions allowed: `planned → confirmed → aired`, and
    /// `planned`/`confirmed` → `cancelled` or `missed`. Nothing leaves
    /// `aired`, `cancelled` or `missed`.
    pub fn check(self, from: Status) -> Result<(), PlanningError> {
        let ok = match self {
            Action::Confirm => from == Status::Planned,
            Action::Air => from == Status::Confirmed,
            Action::Cancel | Action::Miss => from.editable(),
        };
        if ok {
            Ok(())
        } else {
            Err(PlanningError::InvalidTransition {
                from: from.as_str(),
                action: self.verb(),
            })
        }
    }
    /// The event type published on the station's channel.
    pub fn event(self) -> &'static str {
        match self {
            Action::Confirm => "slot.confirmed",
            Action::Air => "slot.aired",
            Action::Cancel => "slot.cancelled",
            Action::Miss => "slot.missed",
        }
    }
}

/// A slot: a spot's place in a station's day.
#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub id: String,
    pub station_id: String,
    /// RFC 3339, UTC.
    pub starts_at: String,
    pub ends_at: String,
    /// Seconds.
    pub duration: i64,
    pub spot_ref: Option<String>,
    pub campaign_ref: Option<String>,
    /// The advertiser as a user of the tenant (notified of the slot's fate).
    pub advertiser_user: Option<String>,
    /// The advertiser as an id in the app's own database.
    pub advertiser_ref: Option<String>,
    pub title: Option<String>,
    pub status: Status,
    pub notes: Option<String>,
    /// 1 when created, +1 on every change; the `ETag` of the slot.
    pub version: i64,
    pub aired_at: Option<String>,
    pub cancel_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    pub starts_ms: i64,
    #[serde(skip)]
    pub ends_ms: i64,
    #[serde(skip)]
    pub aired_ms: Option<i64>,
}

/// Longest slot, in seconds: a day.
pub const MAX_DURATION_SECS: i64 = 86_400;
/// Longest text field (`notes`), in characters; references and titles are
/// shorter ([`MAX_REF_LEN`]).
pub const MAX_NOTES_LEN: usize = 4000;
pub const MAX_REF_LEN: usize = 200;
/// Widest window a list, snapshot or export may ask for.
pub const MAX_WINDOW_DAYS: i64 = 92;

/// RFC 3339 of a millisecond timestamp, in UTC.
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Parses an RFC 3339 instant (`2026-12-05T08:00:00+01:00` or `…Z`) into
/// milliseconds since the epoch.
pub fn parse_instant(field: &str, value: &str) -> Result<i64, String> {
    value
        .parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            format!(
                "{field}: an RFC 3339 date and time with an offset (`2026-12-05T08:00:00+01:00`)"
            )
        })
}

/// Checks a time zone name with the time zone database.
pub fn check_time_zone(name: &str) -> Result<(), PlanningError> {
    TimeZone::get(name).map(|_| ()).map_err(|_| {
        PlanningError::InvalidStation(format!(
            "time_zone: `{name}` is not an IANA time zone (e.g. `Europe/Paris`)"
        ))
    })
}

/// A station name: 1-200 characters, not only spaces.
pub fn check_station_name(name: &str) -> Result<(), PlanningError> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(PlanningError::InvalidStation(
            "name: 1-200 characters".into(),
        ));
    }
    Ok(())
}

/// An optional text field at most `max` characters long.
pub fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<(), String> {
    match value {
        Some(v) if v.chars().count() > max => Err(format!("{field}: at most {max} characters")),
        _ => Ok(()),
    }
}

/// A duration in seconds: 1 to a day.
pub fn check_duration(duration: i64) -> Result<(), String> {
    if !(1..=MAX_DURATION_SECS).contains(&duration) {
        return Err(format!("duration: 1 to {MAX_DURATION_SECS} seconds"));
    }
    Ok(())
}

/// The midnight that starts `date` in `tz`, in milliseconds.
pub fn day_start(date: Date, tz: &TimeZone) -> Result<i64, PlanningError> {
    date.to_zoned(tz.clone())
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| PlanningError::InvalidWindow(format!("date: {e}")))
}

/// A window `[from, to)` in milliseconds, from optional RFC 3339 bounds;
/// without them, today ± 7 days in the station's time zone (from the
/// midnight seven days ago to the midnight eight days ahead).
pub fn window(
    station: &Station,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(i64, i64), PlanningError> {
    let tz = station.tz();
    let today = Zoned::now().with_time_zone(tz.clone()).date();
    let from = match from {
        Some(f) => parse_instant("from", f).map_err(PlanningError::InvalidWindow)?,
        None => day_start(
            today
                .checked_sub(7.days())
                .map_err(|e| PlanningError::InvalidWindow(e.to_string()))?,
            &tz,
        )?,
    };
    let to = match to {
        Some(t) => parse_instant("to", t).map_err(PlanningError::InvalidWindow)?,
        None => day_start(
            today
                .checked_add(8.days())
                .map_err(|e| PlanningError::InvalidWindow(e.to_string()))?,
            &tz,
        )?,
    };
    if to <= from {
        return Err(PlanningError::InvalidWindow("to must be after from".into()));
    }
    if to - from > MAX_WINDOW_DAYS * 86_400_000 {
        return Err(PlanningError::InvalidWindow(format!(
            "the window is at most {MAX_WINDOW_DAYS} days"
        )));
    }
    Ok((from, to))
}

/// `2026-12-05 08:00 CET`: an instant as the station's people read it
/// (notifications).
pub fn local_time(ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_default()
}

/// Who may read a station's planning and follow its channel: planners and
/// broadcasters.
pub fn reader_access() -> Access {
    Access::Permission(Permission::ManagePlanning)
        .or(Access::Permission(Permission::ConfirmDiffusions))
}

/// The `planning:` namespace: planners and broadcasters subscribe; only the
/// domain publishes (after each committed change). A long history lets a
/// console that lost its connection recover the changes it missed.
pub fn namespace(store: Store) -> Namespace {
    Namespace {
        name: "planning",
        key: KeyRule::Required,
        subscribe: reader_access(),
        publish: Access::Nobody,
        presence: reader_access(),
        join_leave: false,
        history: HistoryPolicy {
            size: 1000,
            ttl: Duration::from_secs(24 * 3600),
        },
        hook: None,
        snapshot: Some(Arc::new(PlanningSnapshot(store))),
    }
}

/// `subscribe.params` of a `planning:` channel.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SnapshotParams {
    from: Option<String>,
    to: Option<String>,
}

/// Most slots a snapshot carries; beyond, it says `truncated`.
pub const SNAPSHOT_MAX_SLOTS: usize = 5000;

/// The station and its slots in a window, for a new subscriber.
struct PlanningSnapshot(Store);

impl SnapshotSource for PlanningSnapshot {
    fn snapshot<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelKey,
        _at: &'a Position,
        params: Option<&'a RawValue>,
    ) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>> {
        Box::pin(async move {
            let params: SnapshotParams = match params {
                Some(p) if p.get() != "null" => serde_json::from_str(p.get())
                    .map_err(|e| DomainError::invalid("invalid_window", format!("params: {e}")))?,
                _ => SnapshotParams::default(),
            };
            let station_id = channel.name().key().unwrap_or_default();
            let station = store::station(&self.0, who.tenant.as_str(), station_id).await?;
            let (from, to) = window(&station, params.from.as_deref(), params.to.as_deref())?;
            let page = store::slots(
                &self.0,
                &store::SlotQuery {
                    tenant: who.tenant.as_str(),
                    station: &station.id,
                    from,
                    to,
                    status: None,
                    after: None,
                    limit: SNAPSHOT_MAX_SLOTS,
                },
            )
            .await?;
            let body = serde_json::json!({
                "station": station,
                "from": rfc3339(from),
                "to": rfc3339(to),
                "slots": page.slots,
                "truncated": page.next_cursor.is_some(),
            });
            RawValue::from_string(body.to_string()).map_err(DomainError::internal)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_planning_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                PlanningError::StationNotFound,
                404,
                "not_found",
                "station not found",
            ),
            (
                PlanningError::SlotNotFound,
                404,
                "not_found",
                "slot not found",
            ),
            (
                PlanningError::StationExists,
                409,
                "station_exists",
                "a station with this external_ref exists",
            ),
            (
                PlanningError::InvalidStation("name: 1-200 characters".into()),
                422,
                "invalid_station",
                "name: 1-200 characters",
            ),
            (
                PlanningError::InvalidSlot("duration: 1 to 86400 seconds".into()),
                422,
                "invalid_slot",
                "duration: 1 to 86400 seconds",
            ),
            (
                PlanningError::InvalidWindow("to must be after from".into()),
                422,
                "invalid_window",
                "to must be after from",
            ),
            (
                PlanningError::Overlap(None),
                409,
                "slot_overlap",
                "the slot overlaps another slot of the station",
            ),
            (
                PlanningError::VersionMismatch {
                    expected: 2,
                    current: 3,
                },
                412,
                "version_mismatch",
                "version 2 is not the current version 3",
            ),
            (
                PlanningError::PreconditionRequired,
                428,
                "precondition_required",
                "changing a slot requires If-Match with its version (or `version` in the body)",
            ),
            (
                PlanningError::InvalidTransition {
                    from: "aired",
                    action: "cancelled",
                },
                409,
                "invalid_transition",
                "a slot that is aired cannot be cancelled",
            ),
            (
                PlanningError::ImportFailed(2),
                422,
                "import_failed",
                "2 row(s) of the plan are not valid; nothing was written",
            ),
            (
                PlanningError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }

    #[test]
    fn transitions_follow_the_life_of_a_slot() {
        use Action::*;
        use Status::*;
        assert!(Confirm.check(Planned).is_ok());
        assert!(Confirm.check(Confirmed).is_err());
        assert!(Air.check(Confirmed).is_ok());
        assert!(Air.check(Planned).is_err());
        for from in [Planned, Confirmed] {
            assert!(Cancel.check(from).is_ok());
            assert!(Miss.check(from).is_ok());
        }
        for from in [Aired, Cancelled, Missed] {
            for action in [Confirm, Air, Cancel, Miss] {
                assert!(action.check(from).is_err(), "{action:?} from {from:?}");
            }
        }
    }

    #[test]
    fn default_window_is_today_plus_or_minus_seven_days_in_the_station_zone() {
        let station = Station {
            id: "s".into(),
            name: "s".into(),
            time_zone: "Pacific/Auckland".into(),
            external_ref: None,
            created_at: String::new(),
            updated_at: String::new(),
        };
        let (from, to) = window(&station, None, None).unwrap();
        let days = (to - from) as f64 / 86_400_000.0;
        assert!((14.9..=15.1).contains(&days), "{days}");
        let start = Timestamp::from_millisecond(from)
            .unwrap()
            .to_zoned(station.tz());
        assert_eq!((start.hour(), start.minute()), (0, 0));
        assert!(
            window(
                &station,
                Some("2026-12-05T00:00:00Z"),
                Some("2026-12-04T00:00:00Z")
            )
            .is_err()
        );
        assert!(check_time_zone("Europe/Paris").is_ok());
        assert!(check_time_zone("Mars/Olympus").is_err());
    }
}
