//! Many rows passed to one statement as a single JSON parameter.
//!
//! The obvious multi-row statement binds one `$n` per value. At fan-out
//! sizes that is 10,000 placeholders and more, and SQLite resolves each one
//! by a scan whose cost grows with their number: a 1,000-recipient page
//! spent 83% of the hub's CPU there. PostgreSQL parses and plans a new
//! statement for every page size as well. Packing the rows into one JSON
//! array of arrays, unpacked by the database (`json_each` in SQLite,
//! `jsonb_array_elements` in PostgreSQL), keeps every statement at a handful
//! of parameters and one cached plan, whatever the number of rows.
//!
//! The same holds the other way: sqlx's SQLite driver hands every result
//! row from its worker thread to the async task through a channel, a thread
//! wake-up per row, so reading 2,000 counter rows took 24 ms. Large results
//! come back as one row instead, a JSON array built by the database
//! ([`aggregate`]) and parsed here ([`decode`]).

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{AnyConnection, Row, any::AnyRow};

use super::Backend;

/// The SQL type a JSON element is read as.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    Text(&'static str),
    Int(&'static str),
}

/// The backend behind a connection of the `Any` driver.
pub fn backend_of(conn: &AnyConnection) -> Backend {
    if conn.backend_name() == "PostgreSQL" {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// `SELECT <columns> FROM <the rows of $param>`: column `k` is element `k`
/// of each inner array, under the name it is given. Append a `WHERE`
/// clause as needed (SQLite needs one before an upsert's `ON CONFLICT`).
pub fn select(backend: Backend, param: usize, columns: &[Column]) -> String {
    let exprs: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(k, column)| match (backend, column) {
            (Backend::Sqlite, Column::Text(name) | Column::Int(name)) => {
                format!("json_extract(value, '$[{k}]') AS {name}")
            }
            (Backend::Postgres, Column::Text(name)) => format!("(value->>{k}) AS {name}"),
            (Backend::Postgres, Column::Int(name)) => {
                format!("(value->>{k})::BIGINT AS {name}")
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {}",
        exprs.join(", "),
        source(backend, param)
    )
}

/// A subquery yielding the strings of the JSON array `$param`, for
/// `x IN (...)`.
pub fn strings(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("SELECT value FROM json_each(${param})"),
        Backend::Postgres => format!("SELECT jsonb_array_elements_text(${param}::JSONB)"),
    }
}

/// A select-list item folding `exprs` of every row into one JSON array of
/// arrays, named `agg`; an empty result gives `[]`. Read it with [`decode`].
pub fn aggregate(backend: Backend, exprs: &[&str]) -> String {
    match backend {
        Backend::Sqlite => format!("json_group_array(json_array({})) AS agg", exprs.join(", ")),
        Backend::Postgres => format!(
            "COALESCE(json_agg(json_build_array({})), '[]'::JSON)::TEXT AS agg",
            exprs.join(", ")
        ),
    }
}

/// The rows an [`aggregate`] column holds, each inner array as a `T`
/// (a tuple, in the order of the expressions).
pub fn decode<T: DeserializeOwned>(row: &AnyRow) -> Result<Vec<T>, sqlx::Error> {
    let text: String = row.try_get("agg")?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn source(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("json_each(${param})"),
        Backend::Postgres => format!("jsonb_array_elements(${param}::JSONB)"),
    }
}

/// The parameter's value: rows (tuples serialize as arrays) or strings.
pub fn encode<T: Serialize>(rows: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_reads_elements_by_position() {
        let cols = [Column::Text("user_id"), Column::Int("n")];
        assert_eq!(
            select(Backend::Sqlite, 3, &cols),
            "SELECT json_extract(value, '$[0]') AS user_id, json_extract(value, '$[1]') AS n FROM json_each($3)"
        );
        assert_eq!(
            select(Backend::Postgres, 3, &cols),
            "SELECT (value->>0) AS user_id, (value->>1)::BIGINT AS n FROM jsonb_array_elements($3::JSONB)"
        );
    }

    #[test]
    fn encode_writes_tuples_as_arrays() {
        let rows = [("u1", 1_i64, None::<&str>), ("u\"2", 2, Some("x"))];
        assert_eq!(encode(&rows).unwrap(), r#"[["u1",1,null],["u\"2",2,"x"]]"#);
    }
}
