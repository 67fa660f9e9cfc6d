//! A station's slots as CSV (RFC 4180) and as iCalendar (RFC 5545), for
//! spreadsheets and calendar apps.

use jiff::Timestamp;

use super::{Slot, Station, Status};

/// One CSV field, quoted when it holds a comma, a quote or a line break
/// (quotes doubled), as RFC 4180 says.
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

/// The columns of the CSV export, in order.
pub const CSV_HEADER: &[&str] = &[
    "id",
    "station",
    "starts_at",
    "ends_at",
    "local_start",
    "duration",
    "status",
    "title",
    "spot_ref",
    "campaign_ref",
    "advertiser_user",
    "advertiser_ref",
    "notes",
    "version",
    "aired_at",
    "cancel_reason",
];

/// The slots as CSV with a header row and CRLF line ends; times in UTC
/// (RFC 3339) and `local_start` in the station's zone.
pub fn csv(station: &Station, slots: &[Slot]) -> String {
    let tz = station.tz();
    let mut out = String::new();
    csv_row(&mut out, CSV_HEADER);
    for s in slots {
        let local = Timestamp::from_millisecond(s.starts_ms)
            .map(|t| {
                t.to_zoned(tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            })
            .unwrap_or_default();
        let duration = s.duration.to_string();
        let version = s.version.to_string();
        csv_row(
            &mut out,
            &[
                &s.id,
                &station.name,
                &s.starts_at,
                &s.ends_at,
                &local,
                &duration,
                s.status.as_str(),
                s.title.as_deref().unwrap_or(""),
                s.spot_ref.as_deref().unwrap_or(""),
                s.campaign_ref.as_deref().unwrap_or(""),
                s.advertiser_user.as_deref().unwrap_or(""),
                s.advertiser_ref.as_deref().unwrap_or(""),
                s.notes.as_deref().unwrap_or(""),
                &version,
                s.aired_at.as_deref().unwrap_or(""),
                s.cancel_reason.as_deref().unwrap_or(""),
            ],
        );
    }
    out
}

/// A TEXT value escaped as RFC 5545 §3.3.11 says.
fn ics_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends one content line, folded at 75 octets (never inside a UTF-8
/// character) with CRLF and a space, as RFC 5545 §3.1 says.
fn ics_line(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if width + len > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

/// `20261205T080000Z`.
fn ics_time(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// The slots as an iCalendar document: one `VEVENT` per slot, with a stable
/// `UID` (`<slot id>@relais`), times in UTC and `SEQUENCE` from the
/// version, so calendar apps update the events they already have.
pub fn ics(station: &Station, slots: &[Slot], now_ms: i64) -> String {
    let mut out = String::new();
    let stamp = ics_time(now_ms);
    ics_line(&mut out, "BEGIN:VCALENDAR");
    ics_line(&mut out, "VERSION:2.0");
    ics_line(&mut out, "PRODID:-//Relais//Broadcast planning//EN");
    ics_line(&mut out, "CALSCALE:GREGORIAN");
    ics_line(&mut out, "METHOD:PUBLISH");
    ics_line(
        &mut out,
        &format!("X-WR-CALNAME:{}", ics_text(&station.name)),
    );
    ics_line(&mut out, &format!("X-WR-TIMEZONE:{}", station.time_zone));
    for s in slots {
        let summary = s
            .title
            .as_deref()
            .or(s.spot_ref.as_deref())
            .unwrap_or("Slot");
        let mut description = format!("Status: {}", s.status.as_str());
        for (label, value) in [
            ("Spot", &s.spot_ref),
            ("Campaign", &s.campaign_ref),
            ("Advertiser", &s.advertiser_ref),
            ("Notes", &s.notes),
            ("Cancelled", &s.cancel_reason),
        ] {
            if let Some(v) = value {
                description.push_str(&format!("\n{label}: {v}"));
            }
        }
        let status = match s.status {
            Status::Planned => "TENTATIVE",
            Status::Confirmed | Status::Aired => "CONFIRMED",
            Status::Cancelled | Status::Missed => "CANCELLED",
        };
        ics_line(&mut out, "BEGIN:VEVENT");
        ics_line(&mut out, &format!("UID:{}@relais", s.id));
        ics_line(&mut out, &format!("DTSTAMP:{stamp}"));
        ics_line(&mut out, &format!("DTSTART:{}", ics_time(s.starts_ms)));
        ics_line(&mut out, &format!("DTEND:{}", ics_time(s.ends_ms)));
        ics_line(&mut out, &format!("SEQUENCE:{}", s.version - 1));
        ics_line(&mut out, &format!("SUMMARY:{}", ics_text(summary)));
        ics_line(&mut out, &format!("DESCRIPTION:{}", ics_text(&description)));
        ics_line(&mut out, &format!("LOCATION:{}", ics_text(&station.name)));
        ics_line(&mut out, &format!("STATUS:{status}"));
        ics_line(&mut out, "TRANSP:OPAQUE");
        ics_line(&mut out, "END:VEVENT");
    }
    ics_line(&mut out, "END:VCALENDAR");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = String::new();
        csv_row(&mut out, &["plain", "a,b", "say \"hi\"", "two\nlines"]);
        assert_eq!(out, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n");
    }

    #[test]
    fn ics_text_is_escaped_and_lines_folded_at_75_octets() {
        assert_eq!(ics_text("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
        let mut out = String::new();
        let long = format!("SUMMARY:{}", "é".repeat(60));
        ics_line(&mut out, &long);
        for line in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= 75, "{} octets", line.len());
        }
        let unfolded = out.trim_end_matches("\r\n").replace("\r\n ", "");
        assert_eq!(unfolded, long);
    }
}
