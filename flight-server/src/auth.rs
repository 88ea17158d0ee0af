//! Who may connect and what they see: users with argon2 password hashes and tenants in a
//! file, Basic credentials exchanged for a Bearer token at Handshake, and the token checked on
//! every other call.
//!
//! Logins are made expensive to abuse: hashing runs on blocking threads, a few at a time, with
//! a bounded queue; repeated failures for one user from one address lock that pair out for a
//! while that doubles with each further failure; an unknown user costs a hash like a known one.
//! Tokens are random, expire, and are kept only as SHA-256 digests.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};
use tokenledger_engine::TenantScope;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::admission::Waiting;
use crate::error::{FlightServerError, Result};

/// How long a Bearer token stays valid after Handshake.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed logins for one user from one address before that pair is locked out.
const FAILURES_BEFORE_LOCKOUT: u32 = 5;
/// Failures older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// The first lockout; each further failure doubles it, up to [`LONGEST_LOCKOUT`].
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const LONGEST_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Logins waiting for a hashing thread beyond which new ones are refused.
const MAX_WAITING_LOGINS: usize = 256;
/// (user, address) pairs with failures remembered at most; the oldest are forgotten first.
const MAX_FAILURE_RECORDS: usize = 10_000;

/// Which tenants a user's line grants, as written in the users file's third field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A line from before tenancy (`name:hash`): no tenant's rows (see the README).
    Unstated,
    /// `*` or a comma-separated list of tenants.
    Scope(TenantScope),
}

impl Grant {
    /// The grant of `--tenant` values: `*` alone means every tenant.
    pub fn from_tenants(tenants: &[String]) -> Result<Self> {
        if tenants.iter().any(|t| t == "*") {
            if tenants.len() > 1 {
                return Err(FlightServerError::Config(
                    "--tenant '*' already means every tenant: give it alone".into(),
                ));
            }
            return Ok(Grant::Scope(TenantScope::All));
        }
        for tenant in tenants {
            if tenant.is_empty()
                || tenant.contains([',', ':'])
                || tenant.contains(char::is_whitespace)
            {
                return Err(FlightServerError::Config(format!(
                    "tenant {tenant:?} must be non-empty, without ',', ':' or spaces"
                )));
            }
        }
        Ok(Grant::Scope(TenantScope::only(tenants.iter().cloned())))
    }

    /// What the grant lets its user see.
    pub fn scope(&self) -> TenantScope {
        match self {
            Grant::Unstated => TenantScope::Only(BTreeSet::new()),
            Grant::Scope(scope) => scope.clone(),
        }
    }

    fn parse(field: Option<&str>) -> Self {
        match field {
            None => Grant::Unstated,
            Some("*") => Grant::Scope(TenantScope::All),
            Some(list) => Grant::Scope(TenantScope::only(
                list.split(',').map(str::trim).filter(|t| !t.is_empty()),
            )),
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Grant::Unstated => None,
            Grant::Scope(scope) => Some(scope.to_string()),
        }
    }
}

/// One line of the users file.
#[derive(Debug, Clone)]
struct UserEntry {
    hash: String,
    grant: Grant,
}

/// The users file: one `name:argon2-hash:tenants` per line, tenants being `*` (every tenant)
/// or a comma-separated list; `#` starts a comment. Lines written before tenancy have no
/// third field and grant no tenant.
#[derive(Debug, Default)]
pub struct Users {
    entries: HashMap<String, UserEntry>,
}

impl Users {
    /// Reads a users file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            FlightServerError::Config(format!("users file {}: {e}", path.display()))
        })?;
        let mut entries = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: String| {
                FlightServerError::Config(format!(
                    "users file {} line {}: {what}",
                    path.display(),
                    number + 1
                ))
            };
            let mut fields = line.splitn(3, ':');
            let (Some(name), Some(hash)) = (fields.next(), fields.next()) else {
                return Err(bad("expected name:argon2-hash:tenants".into()));
            };
            PasswordHash::new(hash).map_err(|e| bad(format!("bad hash: {e}")))?;
            let grant = Grant::parse(fields.next());
            entries.insert(
                name.to_string(),
                UserEntry {
                    hash: hash.to_string(),
                    grant,
                },
            );
        }
        Ok(Users { entries })
    }

    /// Adds or replaces `name` in the users file at `path` (created if missing), with the
    /// tenants of `grant`.
    pub fn add(path: &Path, name: &str, password: &str, grant: &Grant) -> Result<()> {
        if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
            return Err(FlightServerError::Config(format!(
                "user name {name:?} must be non-empty, without ':' or spaces"
            )));
        }
        if password.is_empty() {
            return Err(FlightServerError::Config("the password is empty".into()));
        }
        let hash = hash_password(password)?;
        rewrite(path, name, |_| Some(format_line(name, &hash, grant)))
    }

    /// Changes the tenants of an existing user, keeping their password.
    pub fn grant(path: &Path, name: &str, grant: &Grant) -> Result<()> {
        let mut found = false;
        rewrite(path, name, |old| {
            let (_, rest) = old?.split_once(':')?;
            let hash = rest.split(':').next()?;
            found = true;
            Some(format_line(name, hash, grant))
        })?;
        if found {
            Ok(())
        } else {
            Err(FlightServerError::Config(format!(
                "no user {name:?} in {}: add them with `tokenledger user add`",
                path.display()
            )))
        }
    }

    /// Users whose lines predate tenancy (they see no tenant's rows), sorted.
    pub fn without_tenants(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .entries
            .iter()
            .filter(|(_, e)| e.grant == Grant::Unstated)
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort();
        names
    }

    /// `name`'s tenants if `password` is theirs. Costs one hash whether or not `name` exists,
    /// so timing does not tell which user names do.
    pub fn verify(&self, name: &str, password: &str) -> Option<TenantScope> {
        let entry = self.entries.get(name);
        let hash = entry.map_or(UNKNOWN_USER_HASH.as_str(), |e| e.hash.as_str());
        let parsed = PasswordHash::new(hash).ok()?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        entry.filter(|_| matches).map(|e| e.grant.scope())
    }
}

/// A hash no password matches in practice, verified for names that are not users.
static UNKNOWN_USER_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password(&format!("{:x}", rand::random::<u128>())).expect("hashing a random password")
});

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| FlightServerError::Config(format!("salt: {e}")))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| FlightServerError::Config(format!("hashing the password: {e}")))?
        .to_string())
}

fn format_line(name: &str, hash: &str, grant: &Grant) -> String {
    match grant.field() {
        Some(tenants) => format!("{name}:{hash}:{tenants}"),
        None => format!("{name}:{hash}"),
    }
}

/// Rewrites the users file with `name`'s line replaced by `line(old line)` (`None` drops it).
fn rewrite(
    path: &Path,
    name: &str,
    mut line: impl FnMut(Option<&str>) -> Option<String>,
) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(FlightServerError::Config(format!(
                "users file {}: {e}",
                path.display()
            )));
        }
    };
    let is_name = |l: &str| l.split_once(':').is_some_and(|(n, _)| n.trim() == name);
    let old = existing.lines().find(|l| is_name(l));
    let new = line(old);
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|l| !is_name(l))
        .map(str::to_string)
        .collect();
    lines.extend(new);
    std::fs::write(path, lines.join("\n") + "\n")
        .map_err(|e| FlightServerError::Config(format!("users file {}: {e}", path.display())))
}

/// Who is calling: the user, what they may see, and from where.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User name ("anonymous" on a server without users).
    pub user: String,
    /// Whose rows they see.
    pub scope: TenantScope,
    /// Their address, when the transport knows it.
    pub peer: Option<std::net::SocketAddr>,
}

/// A user's failed logins from one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Logins of a server with users: hashing slots, failure records and issued tokens.
#[derive(Debug)]
pub struct Logins {
    users: Arc<Users>,
    /// SHA-256 of each live token → (user, their scope, when issued).
    tokens: Mutex<HashMap<[u8; 32], (String, TenantScope, Instant)>>,
    failures: Mutex<HashMap<(String, Option<IpAddr>), Failures>>,
    hashing: Arc<Semaphore>,
    waiting: AtomicUsize,
    token_lifetime: Duration,
}

/// The server's authentication policy.
#[derive(Debug)]
pub enum Auth {
    /// No users file: anyone may connect and sees everything (the server then listens on
    /// loopback only).
    Open,
    /// Users must authenticate; tokens map to users and their tenants.
    Users(Logins),
}

impl Auth {
    /// Authentication with `users`.
    pub fn with_users(users: Users) -> Self {
        Self::with_token_lifetime(users, TOKEN_LIFETIME)
    }

    /// Authentication with `users` whose tokens last `token_lifetime`.
    pub fn with_token_lifetime(users: Users, token_lifetime: Duration) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Auth::Users(Logins {
            users: Arc::new(users),
            tokens: Mutex::default(),
            failures: Mutex::default(),
            hashing: Arc::new(Semaphore::new(threads)),
            waiting: AtomicUsize::new(0),
            token_lifetime,
        })
    }

    /// Handshake: checks `authorization: Basic …` and returns a Bearer token for it. An open
    /// server hands out a token too, as JDBC always handshakes.
    pub async fn handshake(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<String, Status> {
        let token = hex_token();
        match self {
            Auth::Open => Ok(token),
            Auth::Users(logins) => {
                let (name, password) = basic_credentials(metadata)?;
                let scope = logins.verify(&name, password, peer).await?;
                let now = Instant::now();
                let mut tokens = logins.tokens.lock().expect("token table lock");
                tokens.retain(|_, (_, _, issued)| {
                    now.duration_since(*issued) < logins.token_lifetime
                });
                tokens.insert(digest(&token), (name, scope, now));
                Ok(token)
            }
        }
    }

    /// Checks the Bearer token of a call: who is calling and what they may see (an open
    /// server's callers are "anonymous" and see everything).
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Caller, Status> {
        match self {
            Auth::Open => Ok(Caller {
                user: "anonymous".to_string(),
                scope: TenantScope::All,
                peer,
            }),
            Auth::Users(logins) => {
                let header = authorization(metadata)?;
                let token = header.strip_prefix("Bearer ").ok_or_else(|| {
                    Status::unauthenticated(
                        "expected authorization: Bearer <token> (call Handshake first)",
                    )
                })?;
                let tokens = logins.tokens.lock().expect("token table lock");
                match tokens.get(&digest(token.trim())) {
                    Some((user, scope, issued)) if issued.elapsed() < logins.token_lifetime => {
                        Ok(Caller {
                            user: user.clone(),
                            scope: scope.clone(),
                            peer,
                        })
                    }
                    Some(_) => Err(Status::unauthenticated(
                        "the token has expired: handshake again",
                    )),
                    None => Err(Status::unauthenticated("unknown token: handshake again")),
                }
            }
        }
    }
}

impl Logins {
    /// Checks `name`'s password on a blocking thread, refusing at once while the pair
    /// (`name`, `peer`) is locked out.
    async fn verify(
        &self,
        name: &str,
        password: String,
        peer: Option<IpAddr>,
    ) -> Result<TenantScope, Status> {
        let key = (name.to_string(), peer);
        self.refuse_if_locked(&key)?;
        let (_counted, waiting) = Waiting::join(&self.waiting);
        if waiting >= MAX_WAITING_LOGINS {
            return Err(Status::resource_exhausted(
                "too many logins at once: retry in a few seconds",
            ));
        }
        let _slot = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let users = Arc::clone(&self.users);
        let user = name.to_string();
        let verdict = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .map_err(|e| Status::internal(format!("checking the password: {e}")))?;
        match verdict {
            Some(scope) => {
                self.failures.lock().expect("failures lock").remove(&key);
                Ok(scope)
            }
            None => {
                self.record_failure(key);
                Err(Status::unauthenticated("wrong user name or password"))
            }
        }
    }

    fn refuse_if_locked(&self, key: &(String, Option<IpAddr>)) -> Result<(), Status> {
        let failures = self.failures.lock().expect("failures lock");
        match failures.get(key).and_then(|f| f.locked_until) {
            Some(until) if until > Instant::now() => Err(Status::resource_exhausted(format!(
                "too many failed logins for {:?} from {}: retry in {} s",
                key.0,
                key.1
                    .map_or("this address".to_string(), |ip| ip.to_string()),
                until.duration_since(Instant::now()).as_secs() + 1
            ))),
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

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn authorization(metadata: &MetadataMap) -> Result<&str, Status> {
    metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("no authorization header"))?
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not text"))
}

/// Standard base64, with or without `=` padding: Go's Flight client (under ADBC) leaves it out.
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn basic_credentials(metadata: &MetadataMap) -> Result<(String, String), Status> {
    let header = authorization(metadata)?;
    let encoded = header.strip_prefix("Basic ").ok_or_else(|| {
        Status::unauthenticated("expected authorization: Basic <base64 user:password>")
    })?;
    let decoded = BASIC_BASE64
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| Status::unauthenticated("authorization: Basic value is not base64 text"))?;
    let (name, password) = decoded.split_once(':').ok_or_else(|| {
        Status::unauthenticated("authorization: Basic value is not user:password")
    })?;
    Ok((name.to_string(), password.to_string()))
}

fn hex_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    use super::*;

    fn basic(user: &str, password: &str) -> MetadataMap {
        basic_encoded_by(&STANDARD, user, password)
    }

    fn basic_encoded_by(engine: &impl Engine, user: &str, password: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        let value = format!("Basic {}", engine.encode(format!("{user}:{password}")));
        m.insert("authorization", value.parse().unwrap());
        m
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", format!("Bearer {token}").parse().unwrap());
        m
    }

    fn tenants(names: &[&str]) -> Grant {
        Grant::from_tenants(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    #[tokio::test]
    async fn users_file_round_trip_tenants_and_hashed_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::add(&path, "ana", "s3cret", &tenants(&["acme", "globex"])).unwrap();
        Users::add(&path, "bo", "other", &tenants(&["*"])).unwrap();
        Users::add(&path, "ana", "changed", &tenants(&["acme", "globex"])).unwrap();
        // A line from before tenancy, as an older tokenledger wrote it.
        let old_hash = hash_password("legacy").unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!("cy:{old_hash}\n"));
        std::fs::write(&path, text).unwrap();
        let users = Users::load(&path).unwrap();
        assert_eq!(
            users.verify("ana", "changed"),
            Some(TenantScope::only(["acme", "globex"]))
        );
        assert_eq!(users.verify("ana", "s3cret"), None);
        assert_eq!(users.verify("bo", "other"), Some(TenantScope::All));
        assert_eq!(
            users.verify("cy", "legacy"),
            Some(TenantScope::only(Vec::<String>::new()))
        );
        assert_eq!(users.verify("nobody", "legacy"), None);
        assert_eq!(users.without_tenants(), ["cy"]);
        Users::grant(&path, "cy", &tenants(&["hooli"])).unwrap();
        let users = Users::load(&path).unwrap();
        assert_eq!(
            users.verify("cy", "legacy"),
            Some(TenantScope::only(["hooli"]))
        );
        assert!(Users::grant(&path, "nobody", &tenants(&["hooli"])).is_err());
        assert!(Grant::from_tenants(&["*".into(), "acme".into()]).is_err());
        assert!(Grant::from_tenants(&["a,b".into()]).is_err());
        assert!(
            !std::fs::read_to_string(&path).unwrap().contains("changed"),
            "only hashes are stored"
        );

        let auth = Auth::with_users(users);
        let wrong = auth
            .handshake(&basic("ana", "wrong"), HOME)
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        // "ana:changed" needs one `=` of padding, which Go's client leaves out.
        let unpadded = basic_encoded_by(&STANDARD_NO_PAD, "ana", "changed");
        assert!(auth.handshake(&unpadded, HOME).await.is_ok());
        let token = auth
            .handshake(&basic("ana", "changed"), HOME)
            .await
            .unwrap();
        let caller = auth.authorize(&bearer(&token), None).unwrap();
        assert_eq!(
            (caller.user.as_str(), caller.scope),
            ("ana", TenantScope::only(["acme", "globex"]))
        );
        assert!(
            !format!("{auth:?}").contains(&token),
            "the server keeps digests of tokens, not tokens"
        );
        assert_eq!(
            auth.authorize(&MetadataMap::new(), None)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.authorize(&bearer("00"), None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // The digest itself is no token.
        let digest_hex: String = digest(&token).iter().map(|b| format!("{b:02x}")).collect();
        assert!(auth.authorize(&bearer(&digest_hex), None).is_err());
    }

    fn one_user(dir: &tempfile::TempDir) -> Users {
        let path = dir.path().join("users");
        Users::add(&path, "ana", "right", &tenants(&["acme"])).unwrap();
        Users::load(&path).unwrap()
    }

    #[tokio::test]
    async fn repeated_failures_lock_out_that_user_from_that_address_only() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::with_users(one_user(&dir));
        for _ in 0..FAILURES_BEFORE_LOCKOUT {
            let e = auth
                .handshake(&basic("ana", "guess"), HOME)
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        // Now even the right password is refused without being checked.
        let locked = auth
            .handshake(&basic("ana", "right"), HOME)
            .await
            .unwrap_err();
        assert_eq!(locked.code(), tonic::Code::ResourceExhausted, "{locked:?}");
        assert!(locked.message().contains("retry in"), "{locked:?}");
        // From another address, ana is not locked out.
        let elsewhere = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)));
        auth.handshake(&basic("ana", "right"), elsewhere)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::with_token_lifetime(one_user(&dir), Duration::from_millis(100));
        let token = auth.handshake(&basic("ana", "right"), HOME).await.unwrap();
        assert!(auth.authorize(&bearer(&token), None).is_ok());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let expired = auth.authorize(&bearer(&token), None).unwrap_err();
        assert!(expired.message().contains("expired"), "{expired:?}");
    }
}
