//! Password hashing with argon2id (the crate's recommended parameters).
//!
//! Hashing is CPU- and memory-heavy on purpose (19 MiB each), so it runs
//! on a few threads of its own, one per core, never on the async workers
//! that carry WebSocket traffic. Not on tokio's blocking pool: a burst of
//! 200 sign-ins ran 200 hashes at once on as many threads, with 3.8 GB of
//! hashing memory in flight; here sign-ins beyond one per core wait their
//! turn, which a burst cannot avoid anyway on that many cores. (That the
//! memory goes back to the system afterwards is `main`'s allocator setting.)

use std::sync::{LazyLock, Mutex, mpsc};

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use tokio::sync::Semaphore;

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and the permits to hand them work: never more jobs
/// than threads, so the hand-off queue never holds more than that.
struct Hashers {
    permits: Semaphore,
    jobs: mpsc::SyncSender<Job>,
}

static HASHERS: LazyLock<Hashers> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
    let queue = std::sync::Arc::new(Mutex::new(queue));
    for i in 0..threads {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("relais-argon2-{i}"))
            .spawn(move || {
                loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .expect("starting a password hashing thread");
    }
    Hashers {
        permits: Semaphore::new(threads),
        jobs,
    }
});

/// Runs one argon2 computation on the hashing threads.
async fn bounded<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _permit = HASHERS.permits.acquire().await?;
    let (done, result) = tokio::sync::oneshot::channel();
    HASHERS
        .jobs
        .try_send(Box::new(move || {
            let _ = done.send(work());
        }))
        .map_err(|_| anyhow::anyhow!("password hashing threads unavailable"))?;
    Ok(result.await?)
}

pub async fn hash(password: String) -> anyhow::Result<String> {
    bounded(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await?
}

/// Verifies `password` against `stored`. With `stored = None` it still spends
/// the time of a verification, so a login for an unknown email cannot be told
/// apart by its duration.
pub async fn verify(password: String, stored: Option<String>) -> anyhow::Result<bool> {
    bounded(move || {
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

/// argon2id hash of a random string with the default parameters.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$eW3XUo1fNIBvdUJ8/SY9dIeTsySh3GXR8lYvl2j4Tf4";

/// Minimal password rule: long enough to resist online guessing.
pub fn check_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < 10 {
        return Err("password must have at least 10 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let h = super::hash("correct horse battery".into()).await.unwrap();
        assert!(
            super::verify("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(
            !super::verify("wrong horse battery".into(), Some(h))
                .await
                .unwrap()
        );
        assert!(!super::verify("anything".into(), None).await.unwrap());
    }
}
