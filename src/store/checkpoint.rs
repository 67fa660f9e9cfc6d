//! WAL checkpoints of the SQLite store, off the writers' path.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past
//! 1,000 pages: the connection that holds the only write lock copies the
//! WAL into the database file and syncs it before the next writer may
//! start. A fan-out page on a large inbox writes a few thousand pages, so
//! nearly every page paid for a checkpoint: on 1,000,000 notifications a
//! fan-out to 10,000 users took 1.1 s, and 0.6 s with no checkpoints at all.
//!
//! Here a background task checkpoints every [`INTERVAL`] in `PASSIVE`
//! mode, which never waits for readers or writers: commits go on while it
//! copies. Each connection keeps SQLite's own checkpoint as a backstop at
//! [`BACKSTOP_PAGES`], for a WAL the task cannot keep up with.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Backend, Store};

/// Time between two background checkpoints.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// WAL size, in pages, at which a committing connection checkpoints itself.
pub const BACKSTOP_PAGES: u32 = 16_384;

/// Largest WAL file kept after the WAL restarts, in bytes: a burst may grow
/// the file well past this, and it is truncated back once checkpointed.
pub const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// The pragmas every SQLite connection runs for this scheme.
pub fn connection_pragmas() -> String {
    format!(
        "PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}; PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};"
    )
}

/// Checkpoints the SQLite store until `stop`; returns at once on PostgreSQL.
pub async fn run(store: Store, stop: CancellationToken) {
    if store.backend != Backend::Sqlite {
        return;
    }
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&store.pool)
            .await
        {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(_) => {}
            // Once per failure, not every tick; the backstop still runs.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying every tick");
            }
            Err(_) => {}
        }
    }
    // A last pass: what the hub wrote is in the database file when it stops.
    let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&store.pool)
        .await;
}

#[cfg(test)]
mod tests {
    use std::{str::FromStr, time::Duration};

    use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

    use super::*;

    /// Tenants as the database file alone has them, ignoring the WAL: an
    /// immutable connection reads the main file only.
    async fn tenants_in_main_file(path: &std::path::Path) -> i64 {
        let url = format!("sqlite://{}?immutable=1", path.display());
        let options = AnyConnectOptions::from_str(&url).unwrap();
        // A pool of one, closed after use, so no stale snapshot is reused.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    }

    #[tokio::test]
    async fn committed_rows_reach_the_database_file_without_a_commit_checkpointing() {
        let dir = std::env::temp_dir().join(format!(
            "relais-checkpoint-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let store = Store::connect(None, &dir).await.unwrap();
        store.migrate().await.unwrap();
        let file = dir.join("relais.db");
        // Migrations leave a WAL far below the backstop: flush it first, so
        // what follows is the only thing the WAL holds.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&store.pool)
            .await
            .unwrap();
        for i in 0..50 {
            sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $1, 'T', 0)")
                .bind(format!("t{i}"))
                .execute(&store.pool)
                .await
                .unwrap();
        }
        // Far below the backstop, no commit checkpointed: the rows are in
        // the WAL only.
        assert_eq!(tenants_in_main_file(&file).await, 0);

        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store.clone(), stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut in_file = 0;
        while tokio::time::Instant::now() < deadline {
            in_file = tenants_in_main_file(&file).await;
            if in_file == 50 {
                break;
            }
            tokio::time::sleep(INTERVAL).await;
        }
        stop.cancel();
        task.await.unwrap();
        store.pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(in_file, 50, "the background checkpoint copied the WAL");
    }
}
