//! Many rows passed to one statement as a single JSON parameter.
//!
//! The obvious multi-row statement binds one `$n` per value. At fan-out
//! sizes that is 10,000 placeholders and more, and SQLite resolves each one
//! by a scan whose cost grows with their number: a 1,000-recipient page
//! spent 83% of the hub's CPU there. PostgreSQL parses and plans a new
//! statement for every page size as well. Packing the rows into one JSON
//! array of arrays, unpacked by the database (`json_each` in SQLite,
//! `json_array_elements` in PostgreSQL), keeps every statement at a handful
//! of parameters and one cached plan, whatever the number of rows.

use serde::Serialize;
use sqlx::AnyConnection;

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
        Backend::Postgres => format!("SELECT json_array_elements_text(${param}::JSON)"),
    }
}

fn source(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("json_each(${param})"),
        Backend::Postgres => format!("json_array_elements(${param}::JSON)"),
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
            "SELECT (value->>0) AS user_id, (value->>1)::BIGINT AS n FROM json_array_elements($3::JSON)"
        );
    }

    #[test]
    fn encode_writes_tuples_as_arrays() {
        let rows = [("u1", 1_i64, None::<&str>), ("u\"2", 2, Some("x"))];
        assert_eq!(encode(&rows).unwrap(), r#"[["u1",1,null],["u\"2",2,"x"]]"#);
    }
}
