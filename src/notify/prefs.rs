//! Per-user notification preferences: per category and channel on/off and
//! email frequency, quiet hours in the user's time zone, language, and the
//! local hour of digests. Stored as one JSON document per user; a user who
//! never saved any gets the defaults (everything on, immediate).

use std::collections::BTreeMap;

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::types::{Channel, Locale, Priority, TypeDef, validate_key};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    #[default]
    Immediate,
    Daily,
    Weekly,
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Immediate => "immediate",
            Frequency::Daily => "daily",
            Frequency::Weekly => "weekly",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryPref {
    #[serde(default = "yes")]
    pub in_app: bool,
    #[serde(default = "yes")]
    pub email: bool,
    #[serde(default)]
    pub frequency: Frequency,
}

impl Default for CategoryPref {
    fn default() -> Self {
        CategoryPref {
            in_app: true,
            email: true,
            frequency: Frequency::Immediate,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_digest_hour() -> u8 {
    8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    #[default]
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    fn monday_zero(self) -> i8 {
        self as i8
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local `HH:MM` at which quiet hours begin.
    pub start: String,
    /// Local `HH:MM` at which they end (may be on the next day).
    pub end: String,
}

/// The stored and returned document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// `en` or `fr`; the tenant default when absent.
    #[serde(default)]
    pub locale: Option<Locale>,
    /// IANA name (`Europe/Paris`); UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// Local hour (0–23) at which daily and weekly digests go out.
    #[serde(default = "default_digest_hour")]
    pub digest_hour: u8,
    /// Day of the weekly digest.
    #[serde(default)]
    pub digest_weekday: Weekday,
    /// Per category; a category not listed uses the defaults.
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryPref>,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            locale: None,
            timezone: None,
            quiet_hours: None,
            digest_hour: default_digest_hour(),
            digest_weekday: Weekday::Monday,
            categories: BTreeMap::new(),
        }
    }
}

/// Why a preferences document was refused.
#[derive(Debug, thiserror::Error)]
pub enum PrefsError {
    /// Not a preferences document (unknown field, wrong type, …).
    #[error("{0}")]
    Malformed(String),
    /// A patch that is not a JSON object.
    #[error("expected a JSON object")]
    NotAnObject,
    #[error("`{0}` is not an IANA time zone name like Europe/Paris")]
    UnknownTimezone(String),
    #[error("quiet_hours.start and quiet_hours.end are local times HH:MM (00:00-23:59)")]
    QuietHoursFormat,
    #[error("quiet_hours.start and quiet_hours.end must differ")]
    QuietHoursEmpty,
    #[error("digest_hour is 0-23")]
    DigestHour,
    #[error("categories: {0}")]
    InvalidCategory(String),
    #[error("at most 200 categories")]
    TooManyCategories,
}

impl PrefsError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            PrefsError::UnknownTimezone(_) => "invalid_timezone",
            PrefsError::QuietHoursFormat | PrefsError::QuietHoursEmpty => "invalid_quiet_hours",
            PrefsError::Malformed(_)
            | PrefsError::NotAnObject
            | PrefsError::DigestHour
            | PrefsError::InvalidCategory(_)
            | PrefsError::TooManyCategories => "invalid_preferences",
        }
    }
}

/// Every refusal is a 422 with the variant's code.
impl From<PrefsError> for ApiError {
    fn from(e: PrefsError) -> Self {
        ApiError::invalid(e.code(), e.to_string())
    }
}

/// Minutes since local midnight of `HH:MM`.
fn parse_hhmm(s: &str) -> Option<i32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

impl Preferences {
    /// Parses and checks a document (a full one, or a stored one merged with a patch).
    pub fn from_value(value: Value) -> Result<Preferences, PrefsError> {
        let prefs: Preferences =
            serde_json::from_value(value).map_err(|e| PrefsError::Malformed(e.to_string()))?;
        prefs.validate()?;
        Ok(prefs)
    }

    pub fn validate(&self) -> Result<(), PrefsError> {
        if let Some(tz) = &self.timezone {
            TimeZone::get(tz).map_err(|_| PrefsError::UnknownTimezone(tz.clone()))?;
        }
        if let Some(q) = &self.quiet_hours {
            let (Some(start), Some(end)) = (parse_hhmm(&q.start), parse_hhmm(&q.end)) else {
                return Err(PrefsError::QuietHoursFormat);
            };
            if start == end {
                return Err(PrefsError::QuietHoursEmpty);
            }
        }
        if self.digest_hour > 23 {
            return Err(PrefsError::DigestHour);
        }
        for key in self.categories.keys() {
            validate_key(key).map_err(PrefsError::InvalidCategory)?;
        }
        if self.categories.len() > 200 {
            return Err(PrefsError::TooManyCategories);
        }
        Ok(())
    }

    /// Applies a partial update: top-level fields replace, `categories`
    /// merge per category; `null` clears an optional field.
    pub fn patched(&self, patch: Value) -> Result<Preferences, PrefsError> {
        let Value::Object(patch) = patch else {
            return Err(PrefsError::NotAnObject);
        };
        let mut doc = serde_json::to_value(self).expect("preferences serialize");
        let obj = doc.as_object_mut().expect("an object");
        for (key, value) in patch {
            match (key.as_str(), value) {
                ("categories", Value::Object(cats)) => {
                    let entry = obj
                        .entry("categories")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(existing) = entry {
                        existing.extend(cats);
                    }
                }
                (_, value) => {
                    obj.insert(key, value);
                }
            }
        }
        Preferences::from_value(doc)
    }

    pub fn category(&self, category: &str) -> CategoryPref {
        self.categories.get(category).copied().unwrap_or_default()
    }

    pub fn has_digest(&self) -> bool {
        self.categories
            .values()
            .any(|c| c.email && c.frequency != Frequency::Immediate)
    }

    pub fn time_zone(&self) -> TimeZone {
        self.timezone
            .as_deref()
            .and_then(|tz| TimeZone::get(tz).ok())
            .unwrap_or(TimeZone::UTC)
    }

    /// When `now` (ms) falls in quiet hours, the instant (ms) they end.
    pub fn quiet_until(&self, now: i64) -> Option<i64> {
        let q = self.quiet_hours.as_ref()?;
        let (start, end) = (parse_hhmm(&q.start)?, parse_hhmm(&q.end)?);
        let tz = self.time_zone();
        let local = Timestamp::from_millisecond(now).ok()?.to_zoned(tz.clone());
        let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
        let quiet = if start < end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        };
        if !quiet {
            return None;
        }
        let mut day = local.date();
        if minute >= end {
            day = day.tomorrow().ok()?;
        }
        let end_at = day
            .at((end / 60) as i8, (end % 60) as i8, 0, 0)
            .to_zoned(tz)
            .ok()?;
        Some(end_at.timestamp().as_millisecond())
    }

    /// The digest period (`2026-11-21` or `2026-W47`) whose send time has
    /// come at `now`, if it is not `last` (the period already handled).
    pub fn digest_due(&self, frequency: Frequency, now: i64, last: Option<&str>) -> Option<String> {
        let local = Timestamp::from_millisecond(now)
            .ok()?
            .to_zoned(self.time_zone());
        let today = local.date();
        let (period, day) = match frequency {
            Frequency::Immediate => return None,
            Frequency::Daily => (today.to_string(), today),
            Frequency::Weekly => {
                let week = today.iso_week_date();
                let offset = i64::from(
                    today.weekday().to_monday_zero_offset() - self.digest_weekday.monday_zero(),
                );
                let day = today.checked_sub(jiff::Span::new().days(offset)).ok()?;
                (format!("{:04}-W{:02}", week.year(), week.week()), day)
            }
        };
        if last == Some(period.as_str()) {
            return None;
        }
        let slot = day.at(self.digest_hour as i8, 0, 0, 0);
        (local.datetime() >= slot).then_some(period)
    }
}

/// What happens to one notification for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub in_app: bool,
    pub email: EmailPlan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailPlan {
    None,
    /// Send as soon as possible (critical, or no in-app copy to read).
    Now,
    /// Send after the fallback delay if the in-app copy is still unread.
    Fallback,
    /// Left for the daily or weekly digest.
    Digest,
}

impl Plan {
    pub fn delivers(&self) -> bool {
        self.in_app || self.email != EmailPlan::None
    }
}

/// Decides channels from the type and the user's preferences. Mandatory
/// types ignore opt-outs; critical ones skip the fallback delay and digests.
/// A digest groups unread inbox notifications, so an email-only recipient
/// (in-app off) gets the email at once instead.
pub fn plan(def: &TypeDef, prefs: &Preferences) -> Plan {
    let cat = prefs.category(&def.category);
    let in_app = def.channels.contains(&Channel::InApp) && (def.mandatory || cat.in_app);
    let wants_email = def.channels.contains(&Channel::Email) && (def.mandatory || cat.email);
    let email = if !wants_email {
        EmailPlan::None
    } else if def.priority == Priority::Critical || !in_app {
        EmailPlan::Now
    } else if !cat.email {
        // Mandatory despite an email opt-out: digests only gather categories
        // with email on, so this one is sent on its own.
        EmailPlan::Fallback
    } else {
        match cat.frequency {
            Frequency::Immediate => EmailPlan::Fallback,
            Frequency::Daily | Frequency::Weekly => EmailPlan::Digest,
        }
    };
    Plan { in_app, email }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn prefs(v: Value) -> Preferences {
        Preferences::from_value(v).unwrap()
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_the_users_zone() {
        let p = prefs(
            json!({"timezone": "Europe/Paris", "quiet_hours": {"start": "22:00", "end": "07:00"}}),
        );
        // 22:30 UTC is 23:30 in Paris (winter): quiet until 07:00 Paris = 06:00 UTC.
        assert_eq!(
            p.quiet_until(ms("2026-11-21T22:30:00Z")),
            Some(ms("2026-11-22T06:00:00Z"))
        );
        // 05:00 UTC is 06:00 Paris: quiet until 06:00 UTC the same day.
        assert_eq!(
            p.quiet_until(ms("2026-11-22T05:00:00Z")),
            Some(ms("2026-11-22T06:00:00Z"))
        );
        assert_eq!(p.quiet_until(ms("2026-11-22T12:00:00Z")), None);
    }

    #[test]
    fn digest_periods_follow_the_local_day_and_week() {
        let p = prefs(
            json!({"timezone": "America/New_York", "digest_hour": 8, "digest_weekday": "friday"}),
        );
        // 12:00 UTC = 07:00 in New York: not yet.
        assert_eq!(
            p.digest_due(Frequency::Daily, ms("2026-11-20T12:00:00Z"), None),
            None
        );
        // 13:00 UTC = 08:00 in New York.
        let due = p.digest_due(Frequency::Daily, ms("2026-11-20T13:00:00Z"), None);
        assert_eq!(due.as_deref(), Some("2026-11-20"));
        assert_eq!(
            p.digest_due(
                Frequency::Daily,
                ms("2026-11-20T20:00:00Z"),
                Some("2026-11-20")
            ),
            None
        );
        // 2026-11-20 is a Friday in ISO week 47.
        assert_eq!(
            p.digest_due(Frequency::Weekly, ms("2026-11-20T13:00:00Z"), None)
                .as_deref(),
            Some("2026-W47")
        );
        assert_eq!(
            p.digest_due(Frequency::Weekly, ms("2026-11-19T13:00:00Z"), None),
            None
        );
    }

    #[test]
    fn bad_zones_and_ranges_are_refused() {
        assert_eq!(
            Preferences::from_value(json!({"timezone": "Mars/Olympus"}))
                .unwrap_err()
                .code(),
            "invalid_timezone"
        );
        for q in [
            json!({"start": "25:00", "end": "07:00"}),
            json!({"start": "7h", "end": "08:00"}),
            json!({"start": "07:00", "end": "07:00"}),
        ] {
            assert_eq!(
                Preferences::from_value(json!({"quiet_hours": q}))
                    .unwrap_err()
                    .code(),
                "invalid_quiet_hours"
            );
        }
    }

    #[test]
    fn each_prefs_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                PrefsError::Malformed("unknown field `colour`".into()),
                422,
                "invalid_preferences",
                "unknown field `colour`",
            ),
            (
                PrefsError::NotAnObject,
                422,
                "invalid_preferences",
                "expected a JSON object",
            ),
            (
                PrefsError::UnknownTimezone("Mars/Olympus".into()),
                422,
                "invalid_timezone",
                "`Mars/Olympus` is not an IANA time zone name like Europe/Paris",
            ),
            (
                PrefsError::QuietHoursFormat,
                422,
                "invalid_quiet_hours",
                "quiet_hours.start and quiet_hours.end are local times HH:MM (00:00-23:59)",
            ),
            (
                PrefsError::QuietHoursEmpty,
                422,
                "invalid_quiet_hours",
                "quiet_hours.start and quiet_hours.end must differ",
            ),
            (
                PrefsError::DigestHour,
                422,
                "invalid_preferences",
                "digest_hour is 0-23",
            ),
            (
                PrefsError::InvalidCategory("empty".into()),
                422,
                "invalid_preferences",
                "categories: empty",
            ),
            (
                PrefsError::TooManyCategories,
                422,
                "invalid_preferences",
                "at most 200 categories",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }

    #[test]
    fn patch_merges_categories() {
        let p = prefs(json!({"categories": {"projects": {"email": false}}}));
        let p = p
            .patched(json!({"categories": {"tasks": {"frequency": "daily"}}, "locale": "fr"}))
            .unwrap();
        assert!(!p.category("projects").email);
        assert_eq!(p.category("tasks").frequency, Frequency::Daily);
        assert_eq!(p.locale, Some(Locale::Fr));
        assert!(p.has_digest());
    }
}
