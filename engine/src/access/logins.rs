//! One login policy for every port that takes a password (Flight SQL's Handshake, the report
//! page, the OTLP receiver): the same users file, the same hashing, the same lockout.
//!
//! - Hashing runs on blocking threads, as many at once as there are cores, with at most
//!   [`MAX_WAITING_LOGINS`] waiting; past that a login is refused as [`LoginRefused::Busy`].
//! - [`FAILURES_BEFORE_LOCKOUT`] failed logins for one user from one address lock that pair out
//!   for [`FIRST_LOCKOUT`], doubling with each further failure up to [`LONGEST_LOCKOUT`]; other
//!   addresses are not affected. A locked-out pair is refused without hashing.
//! - An unknown user name costs a hash like a known one, so timing does not tell which exist.
//! - Ports that see the same credentials on every request (HTTP Basic) remember a digest of the
//!   credentials they accepted ([`Logins::verify_remembered`]), so the slow check runs once per
//!   client, and a password is never kept in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::tenancy::TenantScope;
use super::users::Users;

/// Failed logins for one user from one address before that pair is locked out.
pub const FAILURES_BEFORE_LOCKOUT: u32 = 5;
/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// The first lockout; each further failure doubles it, up to [`LONGEST_LOCKOUT`].
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
/// The longest lockout.
pub const LONGEST_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Logins waiting for a hashing thread beyond which new ones are refused.
pub const MAX_WAITING_LOGINS: usize = 256;
/// (user, address) pairs with failures remembered at most; the oldest are forgotten first.
const MAX_FAILURE_RECORDS: usize = 10_000;
/// Accepted credentials remembered at most (then all are forgotten and checked again).
const MAX_REMEMBERED: usize = 1024;
/// How long accepted credentials are remembered: a changed password or tenant list counts
/// within this long even on a port that never re-checks.
const REMEMBERED_FOR: Duration = Duration::from_secs(15 * 60);

/// Why a login was refused. Each port answers with its protocol's code: wrong credentials as
/// unauthenticated (gRPC UNAUTHENTICATED, HTTP 401), the rest as "try later"
/// (RESOURCE_EXHAUSTED, HTTP 429 or 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    /// The user does not exist or the password is not theirs (not said which).
    #[error("wrong user name or password")]
    WrongPassword,
    /// Too many failures for this user from this address.
    #[error("too many failed logins for {user:?} from {from}: retry in {retry_in_secs} s")]
    LockedOut {
        /// The user name tried.
        user: String,
        /// The address, as shown.
        from: String,
        /// Seconds until the lockout ends.
        retry_in_secs: u64,
    },
    /// Too many logins waiting for a hashing thread.
    #[error("too many logins at once: retry in a few seconds")]
    Busy,
}

/// A user's failed logins from one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The login policy over one users file.
#[derive(Debug)]
pub struct Logins {
    users: Arc<Users>,
    failures: Mutex<HashMap<(String, Option<IpAddr>), Failures>>,
    hashing: Semaphore,
    waiting: AtomicUsize,
    /// SHA-256 of accepted credentials → (user, their scope, when accepted).
    remembered: Mutex<HashMap<[u8; 32], (String, TenantScope, Instant)>>,
}

impl Logins {
    /// Logins against `users`.
    pub fn new(users: Users) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Logins {
            users: Arc::new(users),
            failures: Mutex::default(),
            hashing: Semaphore::new(threads),
            waiting: AtomicUsize::new(0),
            remembered: Mutex::default(),
        }
    }

    /// The users file this policy checks against.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Checks `name`'s password on a blocking thread and gives their tenants, refusing at once
    /// while the pair (`name`, `peer`) is locked out.
    pub async fn verify(
        &self,
        name: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<TenantScope, LoginRefused> {
        let key = (name.to_string(), peer);
        self.refuse_if_locked(&key)?;
        let _waiting = WaitingLogin::join(&self.waiting)?;
        let _slot = self
            .hashing
            .acquire()
            .await
            .expect("the hashing semaphore is never closed");
        let users = Arc::clone(&self.users);
        let (user, password) = (name.to_string(), password.to_string());
        let verdict = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .unwrap_or(None);
        match verdict {
            Some(scope) => {
                self.failures.lock().expect("failures lock").remove(&key);
                Ok(scope)
            }
            None => {
                self.record_failure(key);
                Err(LoginRefused::WrongPassword)
            }
        }
    }

    /// As [`Logins::verify`], for a port that receives the same `credentials` (the raw header
    /// value) with every request: once accepted, they are accepted again without hashing for a
    /// while. Only their SHA-256 is kept.
    pub async fn verify_remembered(
        &self,
        credentials: &str,
        name: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<TenantScope, LoginRefused> {
        let digest: [u8; 32] = Sha256::digest(credentials.as_bytes()).into();
        if let Some((user, scope, at)) = self.remembered.lock().expect("lock").get(&digest)
            && user == name
            && at.elapsed() < REMEMBERED_FOR
        {
            return Ok(scope.clone());
        }
        let scope = self.verify(name, password, peer).await?;
        let mut remembered = self.remembered.lock().expect("lock");
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(digest, (name.to_string(), scope.clone(), Instant::now()));
        Ok(scope)
    }

    fn refuse_if_locked(&self, key: &(String, Option<IpAddr>)) -> Result<(), LoginRefused> {
        let failures = self.failures.lock().expect("failures lock");
        match failures.get(key).and_then(|f| f.locked_until) {
            Some(until) if until > Instant::now() => Err(LoginRefused::LockedOut {
                user: key.0.clone(),
                from: key
                    .1
                    .map_or("this address".to_string(), |ip| ip.to_string()),
                retry_in_secs: until.duration_since(Instant::now()).as_secs() + 1,
            }),
            _ => Ok(()),
        }
    }

    fn record_failure(&self, key: (String, Option<IpAddr>)) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() >= MAX_FAILURE_RECORDS {
            failures.retain(|_, f| {
                now.duration_since(f.last) < FAILURE_MEMORY
                    || f.locked_until.is_some_and(|u| u > now)
            });
        }
        let entry = failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.duration_since(entry.last) > FAILURE_MEMORY {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
        if entry.count >= FAILURES_BEFORE_LOCKOUT {
            let doublings = (entry.count - FAILURES_BEFORE_LOCKOUT).min(16);
            let lockout = (FIRST_LOCKOUT * 2u32.pow(doublings)).min(LONGEST_LOCKOUT);
            entry.locked_until = Some(now + lockout);
        }
    }
}

/// One login counted as waiting for a hashing thread until dropped.
struct WaitingLogin<'a>(&'a AtomicUsize);

impl<'a> WaitingLogin<'a> {
    /// Joins the waiting logins, unless [`MAX_WAITING_LOGINS`] wait already.
    fn join(counter: &'a AtomicUsize) -> Result<Self, LoginRefused> {
        let waiting = WaitingLogin(counter);
        if counter.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_LOGINS {
            return Err(LoginRefused::Busy);
        }
        Ok(waiting)
    }
}

impl Drop for WaitingLogin<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::access::users::Grant;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    fn ana(dir: &tempfile::TempDir) -> Logins {
        let path = dir.path().join("users");
        let grant = Grant::from_tenants(&["acme".into()]).unwrap();
        Users::add(&path, "ana", "right", &grant).unwrap();
        Logins::new(Users::load(&path).unwrap())
    }

    #[tokio::test]
    async fn repeated_failures_lock_out_that_user_from_that_address_only() {
        let dir = tempfile::tempdir().unwrap();
        let logins = ana(&dir);
        for _ in 0..FAILURES_BEFORE_LOCKOUT {
            assert_eq!(
                logins.verify("ana", "guess", HOME).await,
                Err(LoginRefused::WrongPassword)
            );
        }
        // Now even the right password is refused without being checked.
        match logins.verify("ana", "right", HOME).await {
            Err(LoginRefused::LockedOut { retry_in_secs, .. }) => {
                assert!((1..=FIRST_LOCKOUT.as_secs() + 1).contains(&retry_in_secs))
            }
            other => panic!("expected a lockout, got {other:?}"),
        }
        // Remembered credentials do not get around a lockout either.
        assert!(matches!(
            logins
                .verify_remembered("Basic x", "ana", "right", HOME)
                .await,
            Err(LoginRefused::LockedOut { .. })
        ));
        // From another address, ana is not locked out.
        let elsewhere = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(
            logins.verify("ana", "right", elsewhere).await,
            Ok(TenantScope::only(["acme"]))
        );
    }

    #[tokio::test]
    async fn remembered_credentials_are_the_same_user_and_only_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let logins = ana(&dir);
        let header = "Basic YW5hOnJpZ2h0";
        let scope = logins
            .verify_remembered(header, "ana", "right", HOME)
            .await
            .unwrap();
        assert_eq!(scope, TenantScope::only(["acme"]));
        assert!(!format!("{logins:?}").contains("right"));
        // The same header naming another user (a forged pairing) is checked afresh.
        assert_eq!(
            logins.verify_remembered(header, "bo", "right", HOME).await,
            Err(LoginRefused::WrongPassword)
        );
    }
}
