//! `/api/v1/stations` and `/api/v1/slots`: stations, slots, a day's plan,
//! broadcasters' actions, lists and exports.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use jiff::civil::{Date, Time};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json, value::RawValue};

use super::{
    Action, MAX_NOTES_LEN, MAX_REF_LEN, PlanningError, Slot, Station, Status, check_duration,
    check_station_name, check_text, check_time_zone, day_start, export, local_time, parse_instant,
    rfc3339,
    store::{self, NewSlot, RowError, SlotQuery},
    window,
};
use crate::{
    app::AppState,
    auth::{Caller, Permission, Scope, extract::AnyCaller},
    error::{ApiError, ApiJson, OptionalJson, query},
    ids::{TenantId, now_millis},
    notify::{Notify, fanout::TriggerRequest, recipients::RecipientSpec, trigger::Recipients},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/stations", get(list_stations).post(create_station))
        .route(
            "/api/v1/stations/{id}",
            get(find_station).patch(update_station),
        )
        .route(
            "/api/v1/stations/{id}/slots",
            get(list_slots).post(create_slot),
        )
        .route("/api/v1/stations/{id}/plan", post(import_plan))
        .route("/api/v1/stations/{id}/export.csv", get(export_csv))
        .route("/api/v1/stations/{id}/export.ics", get(export_ics))
        .route("/api/v1/slots/{id}", get(find_slot).patch(update_slot))
        .route("/api/v1/slots/{id}/{action}", post(slot_action))
}

/// A failed planning request: the REST error, with what helps the caller
/// recover (the current version of a slot that moved on, the slot a write
/// collided with, the refused rows of a plan) beside `code` and `message`.
pub struct Failure {
    error: ApiError,
    extra: serde_json::Map<String, Value>,
    etag: Option<i64>,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            error,
            extra: Default::default(),
            etag: None,
        }
    }
}

impl From<PlanningError> for Failure {
    fn from(e: PlanningError) -> Self {
        let mut extra = serde_json::Map::new();
        let mut etag = None;
        match &e {
            PlanningError::VersionMismatch { current, .. } => {
                extra.insert("current_version".into(), json!(current));
                etag = Some(*current);
            }
            PlanningError::Overlap(Some(slot)) => {
                extra.insert("conflicting_slot".into(), json!(slot));
            }
            _ => {}
        }
        Failure {
            error: e.into(),
            extra,
            etag,
        }
    }
}

impl Failure {
    fn import(errors: Vec<RowError>) -> Self {
        let mut failure = Failure::from(PlanningError::ImportFailed(errors.len()));
        failure.extra.insert("errors".into(), json!(errors));
        failure
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.extra.is_empty() {
            return self.error.into_response();
        }
        let mut detail = serde_json::Map::new();
        detail.insert("code".into(), json!(self.error.code()));
        detail.insert("message".into(), json!(self.error.to_string()));
        detail.extend(self.extra);
        let mut response = (self.error.status(), Json(json!({ "error": detail }))).into_response();
        if let Some(version) = self.etag {
            response.headers_mut().insert(header::ETAG, etag(version));
        }
        response
    }
}

type Reply = Result<Response, Failure>;

/// Planners: users with `manage_planning` (editors, admins) and API keys
/// with the `planning` scope.
fn planner(caller: &Caller) -> Result<(), Failure> {
    if caller.allowed(Permission::ManagePlanning, Scope::Planning) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "planning requires the editor or admin role, or an API key with the planning scope",
        )
        .into())
    }
}

/// Readers and broadcasters' actions: planners, and users with
/// `confirm_diffusions` (broadcasters).
fn broadcaster(caller: &Caller) -> Result<(), Failure> {
    if caller.allowed(Permission::ManagePlanning, Scope::Planning)
        || caller.allowed(Permission::ConfirmDiffusions, Scope::Planning)
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the planning is for broadcasters and planners (editor or admin role, or an API key with the planning scope)",
        )
        .into())
    }
}

fn actor(caller: &Caller) -> Option<String> {
    match caller {
        Caller::User(p) => Some(p.user.as_str().to_owned()),
        Caller::Key(_) => None,
    }
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a valid header")
}

fn slot_response(status: StatusCode, slot: &Slot) -> Response {
    let mut response = (status, Json(slot)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(slot.version));
    response
}

/// What `If-Match` asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Precondition {
    /// No header.
    Absent,
    /// `*`: whatever the current version is.
    Any,
    /// `"<version>"` (`W/` and the quotes optional).
    Version(i64),
}

fn if_match(headers: &HeaderMap) -> Result<Precondition, Failure> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(Precondition::Absent);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(Precondition::Any);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse::<i64>().map(Precondition::Version).map_err(|_| {
        ApiError::BadRequest(format!(
            "If-Match: expected the slot's ETag, a quoted version such as \"3\"; got `{text}`"
        ))
        .into()
    })
}

/// Publishes a change on the station's channel, after its commit. A failure
/// is logged: the change is stored, and a console that misses it gets a
/// fresh snapshot when it cannot recover.
async fn publish(notify: &Notify, tenant: &TenantId, station: &str, body: Value) {
    let Ok(raw) = RawValue::from_string(body.to_string()) else {
        return;
    };
    match notify
        .gateway
        .resolve(tenant, &format!("planning:{station}"))
    {
        Ok((key, ns)) => {
            if let Err(e) = notify.gateway.publish(&key, ns, &raw).await {
                tracing::warn!(error = %e, station, "planning change not published live");
            }
        }
        Err(e) => tracing::warn!(error = %e, station, "planning channel not resolved"),
    }
}

async fn publish_slot(notify: &Notify, tenant: &TenantId, kind: &str, slot: &Slot) {
    publish(
        notify,
        tenant,
        &slot.station_id,
        json!({"type": kind, "slot": slot}),
    )
    .await;
}

/// Deserializes a present field (even `null`) as `Some`, so that an absent
/// field (`None`) and a cleared one (`Some(None)`) differ.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

// ---- stations

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationRequest {
    name: String,
    time_zone: String,
    #[serde(default)]
    external_ref: Option<String>,
}

async fn create_station(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    ApiJson(req): ApiJson<StationRequest>,
) -> Reply {
    planner(&caller)?;
    check_station_name(&req.name)?;
    check_time_zone(&req.time_zone)?;
    check_text("external_ref", req.external_ref.as_deref(), MAX_REF_LEN)
        .map_err(PlanningError::InvalidStation)?;
    let station = store::create_station(
        &notify.store,
        caller.tenant().as_str(),
        req.name.trim(),
        &req.time_zone,
        req.external_ref.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(station)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

async fn list_stations(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Reply {
    broadcaster(&caller)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let page = store::stations(
        &notify.store,
        caller.tenant().as_str(),
        q.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(json!({"items": page.stations, "next_cursor": page.next_cursor})).into_response())
}

async fn find_station(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> Reply {
    broadcaster(&caller)?;
    let station = store::station(&notify.store, caller.tenant().as_str(), &id).await?;
    Ok(Json(station).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationPatch {
    name: Option<String>,
    time_zone: Option<String>,
    #[serde(default, deserialize_with = "present")]
    external_ref: Option<Option<String>>,
}

async fn update_station(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<StationPatch>,
) -> Reply {
    planner(&caller)?;
    let tenant = caller.tenant();
    let mut station = store::station(&notify.store, tenant.as_str(), &id).await?;
    if let Some(name) = req.name {
        check_station_name(&name)?;
        station.name = name.trim().to_owned();
    }
    if let Some(tz) = req.time_zone {
        check_time_zone(&tz)?;
        station.time_zone = tz;
    }
    if let Some(external_ref) = req.external_ref {
        check_text("external_ref", external_ref.as_deref(), MAX_REF_LEN)
            .map_err(PlanningError::InvalidStation)?;
        station.external_ref = external_ref;
    }
    let station = store::update_station(&notify.store, tenant.as_str(), &station).await?;
    publish(
        &notify,
        tenant,
        &station.id,
        json!({"type": "station.updated", "station": station}),
    )
    .await;
    Ok(Json(station).into_response())
}

// ---- slots

/// The fields of a new slot (also one row of a day's plan).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotRequest {
    /// RFC 3339 with an offset.
    #[serde(default)]
    starts_at: Option<String>,
    /// In a day's plan: the local time of day (`08:00`, `08:00:30`) in the
    /// station's zone, instead of `starts_at`.
    #[serde(default)]
    time: Option<String>,
    duration: i64,
    #[serde(default)]
    spot_ref: Option<String>,
    #[serde(default)]
    campaign_ref: Option<String>,
    #[serde(default)]
    advertiser_user: Option<String>,
    #[serde(default)]
    advertiser_ref: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

fn check_fields(
    spot_ref: Option<&str>,
    campaign_ref: Option<&str>,
    advertiser_ref: Option<&str>,
    advertiser_user: Option<&str>,
    title: Option<&str>,
    notes: Option<&str>,
) -> Result<(), String> {
    check_text("spot_ref", spot_ref, MAX_REF_LEN)?;
    check_text("campaign_ref", campaign_ref, MAX_REF_LEN)?;
    check_text("advertiser_ref", advertiser_ref, MAX_REF_LEN)?;
    check_text("advertiser_user", advertiser_user, MAX_REF_LEN)?;
    check_text("title", title, MAX_REF_LEN)?;
    check_text("notes", notes, MAX_NOTES_LEN)
}

/// Checks a new slot's fields and computes its time; `day` is the plan's
/// date and zone, where `time` is allowed and the slot must start that day.
fn new_slot(
    station: &Station,
    req: SlotRequest,
    day: Option<(Date, i64, i64)>,
) -> Result<NewSlot, String> {
    let starts_ms = match (&req.starts_at, &req.time, day) {
        (Some(at), None, _) => parse_instant("starts_at", at)?,
        (None, Some(time), Some((date, _, _))) => {
            let time: Time = time.parse().map_err(|_| {
                format!("time: a local time of day such as `08:00:30`, got `{time}`")
            })?;
            date.to_datetime(time)
                .to_zoned(station.tz())
                .map(|z| z.timestamp().as_millisecond())
                .map_err(|e| format!("time: {e}"))?
        }
        (None, Some(_), None) => return Err("starts_at is required".into()),
        (Some(_), Some(_), _) => return Err("give starts_at or time, not both".into()),
        (None, None, _) => return Err("starts_at is required".into()),
    };
    if let Some((date, from, to)) = day
        && !(from..to).contains(&starts_ms)
    {
        return Err(format!(
            "starts_at: the slot must start on {date} in {}",
            station.time_zone
        ));
    }
    check_duration(req.duration)?;
    check_fields(
        req.spot_ref.as_deref(),
        req.campaign_ref.as_deref(),
        req.advertiser_ref.as_deref(),
        req.advertiser_user.as_deref(),
        req.title.as_deref(),
        req.notes.as_deref(),
    )?;
    Ok(NewSlot {
        station_id: station.id.clone(),
        starts_ms,
        ends_ms: starts_ms + req.duration * 1000,
        spot_ref: req.spot_ref,
        campaign_ref: req.campaign_ref,
        advertiser_user: req.advertiser_user,
        advertiser_ref: req.advertiser_ref,
        title: req.title,
        notes: req.notes,
    })
}

async fn check_advertiser(
    notify: &Notify,
    tenant: &TenantId,
    user: Option<&str>,
) -> Result<(), String> {
    if let Some(user) = user
        && !store::user_exists(&notify.store, tenant.as_str(), user)
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, "checking an advertiser");
                "advertiser_user: could not be checked".to_owned()
            })?
    {
        return Err(format!("advertiser_user: no user `{user}` in this tenant"));
    }
    Ok(())
}

async fn create_slot(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SlotRequest>,
) -> Reply {
    planner(&caller)?;
    let tenant = caller.tenant();
    let station = store::station(&notify.store, tenant.as_str(), &id).await?;
    let new = new_slot(&station, req, None).map_err(PlanningError::InvalidSlot)?;
    check_advertiser(&notify, tenant, new.advertiser_user.as_deref())
        .await
        .map_err(PlanningError::InvalidSlot)?;
    let slot = store::insert_slot(&notify.store, tenant.as_str(), &new).await?;
    publish_slot(&notify, tenant, "slot.created", &slot).await;
    Ok(slot_response(StatusCode::CREATED, &slot))
}

async fn find_slot(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> Reply {
    broadcaster(&caller)?;
    let slot = store::slot(&notify.store, caller.tenant().as_str(), &id).await?;
    Ok(slot_response(StatusCode::OK, &slot))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotPatch {
    /// The version the change is based on, when `If-Match` is not sent.
    version: Option<i64>,
    starts_at: Option<String>,
    duration: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    spot_ref: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    campaign_ref: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    advertiser_user: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    advertiser_ref: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    notes: Option<Option<String>>,
}

/// Changes a slot's time or fields, as of the version the caller holds
/// (`If-Match` or `version`): 428 without one, 412 if the slot moved on.
/// A confirmed slot whose time changes goes back to `planned`: the
/// broadcaster confirms the new time.
async fn update_slot(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SlotPatch>,
) -> Reply {
    planner(&caller)?;
    let tenant = caller.tenant();
    let precondition = if_match(&headers)?;
    let current = store::slot(&notify.store, tenant.as_str(), &id).await?;
    let expected = match (precondition, req.version) {
        (Precondition::Version(v), _) | (Precondition::Absent, Some(v)) => v,
        (Precondition::Any, _) => current.version,
        (Precondition::Absent, None) => return Err(PlanningError::PreconditionRequired.into()),
    };
    if current.version != expected {
        return Err(PlanningError::VersionMismatch {
            expected,
            current: current.version,
        }
        .into());
    }
    if !current.status.editable() {
        return Err(PlanningError::InvalidTransition {
            from: current.status.as_str(),
            action: "edited",
        }
        .into());
    }
    let mut next = current.clone();
    if let Some(at) = &req.starts_at {
        next.starts_ms = parse_instant("starts_at", at).map_err(PlanningError::InvalidSlot)?;
    }
    let duration = req.duration.unwrap_or(current.duration);
    check_duration(duration).map_err(PlanningError::InvalidSlot)?;
    next.ends_ms = next.starts_ms + duration * 1000;
    let moved = next.starts_ms != current.starts_ms || next.ends_ms != current.ends_ms;
    for (field, value) in [
        (&mut next.spot_ref, req.spot_ref),
        (&mut next.campaign_ref, req.campaign_ref),
        (&mut next.advertiser_user, req.advertiser_user),
        (&mut next.advertiser_ref, req.advertiser_ref),
        (&mut next.title, req.title),
        (&mut next.notes, req.notes),
    ] {
        if let Some(value) = value {
            *field = value;
        }
    }
    check_fields(
        next.spot_ref.as_deref(),
        next.campaign_ref.as_deref(),
        next.advertiser_ref.as_deref(),
        next.advertiser_user.as_deref(),
        next.title.as_deref(),
        next.notes.as_deref(),
    )
    .map_err(PlanningError::InvalidSlot)?;
    if next.advertiser_user != current.advertiser_user {
        check_advertiser(&notify, tenant, next.advertiser_user.as_deref())
            .await
            .map_err(PlanningError::InvalidSlot)?;
    }
    if moved && next.status == Status::Confirmed {
        next.status = Status::Planned;
    }
    let slot = compare_and_set(&notify, tenant, expected, &next).await?;
    let kind = if moved { "slot.moved" } else { "slot.updated" };
    publish_slot(&notify, tenant, kind, &slot).await;
    Ok(slot_response(StatusCode::OK, &slot))
}

/// Writes `next` if the slot still has version `expected`; otherwise a
/// 404 if it is gone, or a 412 with its current version.
async fn compare_and_set(
    notify: &Notify,
    tenant: &TenantId,
    expected: i64,
    next: &Slot,
) -> Result<Slot, PlanningError> {
    if let Some(slot) =
        store::compare_and_set(&notify.store, tenant.as_str(), expected, next).await?
    {
        return Ok(slot);
    }
    let current = store::slot(&notify.store, tenant.as_str(), &next.id).await?;
    Err(PlanningError::VersionMismatch {
        expected,
        current: current.version,
    })
}

// ---- broadcasters' actions

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionRequest {
    /// `aired`: when it went on air (RFC 3339); now by default.
    #[serde(default)]
    aired_at: Option<String>,
    /// `cancel` (required), `missed` (optional): why.
    #[serde(default)]
    reason: Option<String>,
    /// The version the action is based on, when `If-Match` is not sent.
    #[serde(default)]
    version: Option<i64>,
}

/// `POST /api/v1/slots/{id}/confirm|aired|cancel|missed`.
async fn slot_action(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<ActionRequest>,
) -> Reply {
    let action = match action.as_str() {
        "confirm" => Action::Confirm,
        "aired" => Action::Air,
        "cancel" => Action::Cancel,
        "missed" => Action::Miss,
        _ => {
            return Err(ApiError::NoSuch(
                "not_found",
                format!("no slot action `{action}` (confirm, aired, cancel, missed)"),
            )
            .into());
        }
    };
    act(
        &notify,
        &caller,
        &id,
        &headers,
        req.unwrap_or_default(),
        action,
    )
    .await
}

/// How many times an action without a version is retried when a concurrent
/// change wins the compare-and-set.
const ACTION_ATTEMPTS: usize = 5;

/// Applies a broadcaster's action as a compare-and-set on the slot's
/// version: the one given (`If-Match` or `version`, 412 if it moved on), or
/// the one just read (retried if another change wins in between).
async fn act(
    notify: &Notify,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    req: ActionRequest,
    action: Action,
) -> Reply {
    broadcaster(caller)?;
    let tenant = caller.tenant();
    let given = match if_match(headers)? {
        Precondition::Version(v) => Some(v),
        Precondition::Any => None,
        Precondition::Absent => req.version,
    };
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if action == Action::Cancel && reason.is_none() {
        return Err(PlanningError::InvalidSlot("reason: required to cancel a slot".into()).into());
    }
    check_text("reason", reason, 500).map_err(PlanningError::InvalidSlot)?;
    let aired_ms = match (&req.aired_at, action) {
        (Some(at), Action::Air) => {
            Some(parse_instant("aired_at", at).map_err(PlanningError::InvalidSlot)?)
        }
        (Some(_), _) => {
            return Err(PlanningError::InvalidSlot(
                "aired_at: only when reporting a slot aired".into(),
            )
            .into());
        }
        (None, Action::Air) => Some(now_millis()),
        (None, _) => None,
    };
    let mut attempt = 0;
    let slot = loop {
        attempt += 1;
        let current = store::slot(&notify.store, tenant.as_str(), id).await?;
        let expected = given.unwrap_or(current.version);
        if current.version != expected {
            return Err(PlanningError::VersionMismatch {
                expected,
                current: current.version,
            }
            .into());
        }
        action.check(current.status)?;
        let mut next = current.clone();
        next.status = action.target();
        if action == Action::Air {
            next.aired_ms = aired_ms;
        }
        if matches!(action, Action::Cancel | Action::Miss) {
            next.cancel_reason = reason.map(str::to_owned);
        }
        match compare_and_set(notify, tenant, expected, &next).await {
            Ok(slot) => break slot,
            Err(PlanningError::VersionMismatch { .. })
                if given.is_none() && attempt < ACTION_ATTEMPTS => {}
            Err(e) => return Err(e.into()),
        }
    };
    publish_slot(notify, tenant, action.event(), &slot).await;
    tell_advertiser(notify, caller, &slot, action, reason).await;
    Ok(slot_response(StatusCode::OK, &slot))
}

/// Notifies the advertiser (when it is a user) of a confirmation, an airing
/// or a cancellation. A failure is logged and does not undo the action.
async fn tell_advertiser(
    notify: &Notify,
    caller: &Caller,
    slot: &Slot,
    action: Action,
    reason: Option<&str>,
) {
    let type_key = match action {
        Action::Confirm => "slot.confirmed",
        Action::Air => "spot.aired",
        Action::Cancel => "slot.cancelled",
        Action::Miss => return,
    };
    let Some(advertiser) = &slot.advertiser_user else {
        return;
    };
    let tenant = caller.tenant();
    let station = match store::station(&notify.store, tenant.as_str(), &slot.station_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, slot = %slot.id, "advertiser not notified");
            return;
        }
    };
    let when = match (action, slot.aired_ms) {
        (Action::Air, Some(aired)) => aired,
        _ => slot.starts_ms,
    };
    let mut payload = json!({
        "slot": {"id": slot.id, "starts_at": local_time(when, &station.tz()), "version": slot.version},
        "station": {"id": station.id, "name": station.name},
        "spot": {
            "title": slot.title.as_deref().or(slot.spot_ref.as_deref()).unwrap_or("spot"),
            "ref": slot.spot_ref,
        },
    });
    if let Some(reason) = reason {
        payload["reason"] = json!(reason);
    }
    let trigger = TriggerRequest {
        type_key: type_key.into(),
        payload,
        recipients: RecipientSpec {
            users: vec![advertiser.clone()],
            ..RecipientSpec::default()
        },
        actor: actor(caller),
    };
    // One notification per version of the slot, even if this runs twice.
    let key = format!("planning:{}:{}", slot.id, slot.version);
    if let Err(e) = notify
        .trigger(tenant, trigger, Some(&key), Recipients::MayBeNone)
        .await
    {
        tracing::warn!(error = %e, slot = %slot.id, "advertiser not notified");
    }
}

// ---- lists

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsQuery {
    from: Option<String>,
    to: Option<String>,
    /// Comma-separated statuses.
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

fn statuses(list: Option<&str>) -> Result<Option<Vec<Status>>, Failure> {
    let Some(list) = list else { return Ok(None) };
    list.split(',')
        .map(|s| {
            Status::parse(s.trim()).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_query",
                    format!("status: `{s}` is not planned, confirmed, aired, cancelled or missed"),
                )
                .into()
            })
        })
        .collect::<Result<Vec<_>, Failure>>()
        .map(Some)
}

fn cursor(c: Option<&str>) -> Result<Option<(i64, &str)>, Failure> {
    let Some(c) = c else { return Ok(None) };
    c.split_once('.')
        .and_then(|(start, id)| Some((start.parse().ok()?, id)))
        .map(Some)
        .ok_or_else(|| ApiError::invalid("invalid_query", "cursor: not one this API gave").into())
}

async fn list_slots(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    q: Result<Query<SlotsQuery>, QueryRejection>,
) -> Reply {
    broadcaster(&caller)?;
    let q = query(q)?;
    let tenant = caller.tenant().as_str();
    let station = store::station(&notify.store, tenant, &id).await?;
    let (from, to) = window(&station, q.from.as_deref(), q.to.as_deref())?;
    let status = statuses(q.status.as_deref())?;
    let page = store::slots(
        &notify.store,
        &SlotQuery {
            tenant,
            station: &station.id,
            from,
            to,
            status: status.as_deref(),
            after: cursor(q.cursor.as_deref())?,
            limit: q.limit.unwrap_or(500).clamp(1, 5000) as usize,
        },
    )
    .await?;
    Ok(Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "items": page.slots,
        "next_cursor": page.next_cursor,
    }))
    .into_response())
}

// ---- a day's plan

/// Most rows in one plan.
const MAX_PLAN_ROWS: usize = 5000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRequest {
    /// The day, in the station's zone.
    date: String,
    slots: Vec<Value>,
    /// Cancel the day's `planned` slots first.
    #[serde(default)]
    replace: bool,
}

/// Writes a day's plan, all or nothing: 201 with the slots, or 422
/// `import_failed` listing every refused row (invalid, outside the day,
/// overlapping a stored slot or another row), and nothing written.
async fn import_plan(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PlanRequest>,
) -> Reply {
    planner(&caller)?;
    let tenant = caller.tenant();
    let station = store::station(&notify.store, tenant.as_str(), &id).await?;
    let date: Date = req.date.parse().map_err(|_| {
        PlanningError::InvalidWindow(format!("date: `{}` is not a date (YYYY-MM-DD)", req.date))
    })?;
    if req.slots.len() > MAX_PLAN_ROWS {
        return Err(PlanningError::InvalidSlot(format!(
            "slots: at most {MAX_PLAN_ROWS} rows in one plan"
        ))
        .into());
    }
    let tz = station.tz();
    let from = day_start(date, &tz)?;
    let to = day_start(
        date.tomorrow()
            .map_err(|e| PlanningError::InvalidWindow(e.to_string()))?,
        &tz,
    )?;
    let mut rows = Vec::with_capacity(req.slots.len());
    let mut errors = Vec::new();
    for (i, value) in req.slots.into_iter().enumerate() {
        let row = i + 1;
        let checked = serde_json::from_value::<SlotRequest>(value)
            .map_err(|e| e.to_string())
            .and_then(|r| new_slot(&station, r, Some((date, from, to))));
        let checked = match checked {
            Ok(new) => check_advertiser(&notify, tenant, new.advertiser_user.as_deref())
                .await
                .map(|_| new),
            Err(e) => Err(e),
        };
        match checked {
            Ok(new) => rows.push((row, new)),
            Err(message) => errors.push(RowError {
                row,
                code: "invalid_slot",
                message,
                conflicts_with: None,
            }),
        }
    }
    let replace = req.replace.then_some((from, to));
    let written = store::import(
        &notify.store,
        tenant.as_str(),
        &station.id,
        &rows,
        replace,
        errors.is_empty(),
    )
    .await?;
    let imported = match written {
        Ok(imported) => imported,
        Err(more) => {
            errors.extend(more);
            errors.sort_by_key(|e| e.row);
            return Err(Failure::import(errors));
        }
    };
    for slot in &imported.cancelled {
        publish_slot(&notify, tenant, "slot.cancelled", slot).await;
    }
    for slot in &imported.created {
        publish_slot(&notify, tenant, "slot.created", slot).await;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "date": date.to_string(),
            "created": imported.created.len(),
            "cancelled": imported.cancelled.len(),
            "slots": imported.created,
        })),
    )
        .into_response())
}

// ---- exports

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
}

/// Every slot of the window (page after page), and the station.
async fn export_slots(
    notify: &Notify,
    caller: &Caller,
    id: &str,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<(Station, Vec<Slot>), Failure> {
    broadcaster(caller)?;
    let q = query(q)?;
    let tenant = caller.tenant().as_str();
    let station = store::station(&notify.store, tenant, id).await?;
    let (from, to) = window(&station, q.from.as_deref(), q.to.as_deref())?;
    let status = statuses(q.status.as_deref())?;
    let mut all = Vec::new();
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = store::slots(
            &notify.store,
            &SlotQuery {
                tenant,
                station: &station.id,
                from,
                to,
                status: status.as_deref(),
                after: after.as_ref().map(|(s, i)| (*s, i.as_str())),
                limit: 5000,
            },
        )
        .await?;
        after = page
            .next_cursor
            .is_some()
            .then(|| page.slots.last().map(|s| (s.starts_ms, s.id.clone())))
            .flatten();
        all.extend(page.slots);
        if after.is_none() {
            break;
        }
    }
    Ok((station, all))
}

fn download(content_type: &'static str, filename: String, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn export_csv(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Reply {
    let (station, slots) = export_slots(&notify, &caller, &id, q).await?;
    Ok(download(
        "text/csv; charset=utf-8; header=present",
        format!("planning-{}.csv", station.id),
        export::csv(&station, &slots),
    ))
}

async fn export_ics(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Reply {
    let (station, slots) = export_slots(&notify, &caller, &id, q).await?;
    Ok(download(
        "text/calendar; charset=utf-8",
        format!("planning-{}.ics", station.id),
        export::ics(&station, &slots, now_millis()),
    ))
}
