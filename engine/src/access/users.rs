//! The users file: who may log in on any port (Flight SQL, the report page, the OTLP receiver)
//! and which tenants each sees and writes. One `name:argon2-hash:tenants` per line, tenants
//! being `*` (every tenant) or a comma-separated list; `#` starts a comment. Lines written
//! before tenancy have no third field and grant no tenant.
//!
//! Passwords are stored only as argon2 hashes; checking one is slow on purpose, so callers run
//! [`Users::verify`] through [`super::logins::Logins`], which bounds how many run at once and
//! locks out repeated failures.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use super::tenancy::TenantScope;
use crate::error::{EngineError, Result};

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
                return Err(EngineError::Config(
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
                return Err(EngineError::Config(format!(
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
    /// Reads a users file; refused when anyone but its owner may read or write it (the hashes
    /// are what a password guesser wants).
    pub fn load(path: &Path) -> Result<Self> {
        refuse_if_others_may_read(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Config(format!("users file {}: {e}", path.display())))?;
        let mut entries = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: String| {
                EngineError::Config(format!(
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
            return Err(EngineError::Config(format!(
                "user name {name:?} must be non-empty, without ':' or spaces"
            )));
        }
        if password.is_empty() {
            return Err(EngineError::Config("the password is empty".into()));
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
            Err(EngineError::Config(format!(
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
        .map_err(|e| EngineError::Config(format!("salt: {e}")))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| EngineError::Config(format!("hashing the password: {e}")))?
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
            return Err(EngineError::Config(format!(
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
    write_private(path, &(lines.join("\n") + "\n"))
        .map_err(|e| EngineError::Config(format!("users file {}: {e}", path.display())))
}

/// Replaces the file at `path` with `text`, readable and writable by its owner only: written
/// beside it, then renamed over it, so a reader sees the old file or the new, never half.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map_or("users".into(), |n| n.to_string_lossy());
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Refuses a secrets file (users, keys) that its group or others may read or write.
pub fn refuse_if_others_may_read(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(EngineError::Config(format!(
                "{} may be read by others (mode {mode:o}): it holds secrets; \
                 `chmod 600 {}` and try again",
                path.display(),
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(names: &[&str]) -> Grant {
        Grant::from_tenants(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn users_file_round_trip_with_tenants_and_only_hashes_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::add(&path, "ana", "s3cret", &tenants(&["acme", "globex"])).unwrap();
        Users::add(&path, "bo", "other", &tenants(&["*"])).unwrap();
        Users::add(&path, "ana", "changed", &tenants(&["acme", "globex"])).unwrap();
        // A line from before tenancy, as an older tokenledger wrote it.
        let old_hash = hash_password("legacy").unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!("cy:{old_hash}\n"));
        write_private(&path, &text).unwrap();
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
    }

    #[cfg(unix)]
    #[test]
    fn a_users_file_others_may_read_is_refused_and_one_we_write_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::add(&path, "ana", "pw", &tenants(&["acme"])).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for loose in [0o644, 0o640, 0o606] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let error = Users::load(&path).unwrap_err().to_string();
            assert!(
                error.contains(&format!("may be read by others (mode {loose:o})"))
                    && error.contains("chmod 600"),
                "{error}"
            );
        }
        // Adding a user again makes the file private again.
        Users::add(&path, "bo", "pw", &tenants(&["acme"])).unwrap();
        assert!(Users::load(&path).is_ok());
    }
}
