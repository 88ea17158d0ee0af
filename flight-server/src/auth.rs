//! Who may connect: users with argon2 password hashes in a file, Basic credentials exchanged for a
//! Bearer token at Handshake, and the token checked on every other call.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::error::{FlightServerError, Result};

/// How long a Bearer token stays valid after Handshake.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The users file: one `name:argon2-hash` per line; `#` starts a comment.
#[derive(Debug, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    /// Reads a users file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            FlightServerError::Config(format!("users file {}: {e}", path.display()))
        })?;
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(FlightServerError::Config(format!(
                    "users file {} line {}: expected name:argon2-hash",
                    path.display(),
                    number + 1
                )));
            };
            PasswordHash::new(hash).map_err(|e| {
                FlightServerError::Config(format!(
                    "users file {} line {}: bad hash: {e}",
                    path.display(),
                    number + 1
                ))
            })?;
            hashes.insert(name.to_string(), hash.to_string());
        }
        Ok(Users { hashes })
    }

    /// Adds or replaces `name` in the users file at `path` (created if missing).
    pub fn add(path: &Path, name: &str, password: &str) -> Result<()> {
        if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
            return Err(FlightServerError::Config(format!(
                "user name {name:?} must be non-empty, without ':' or spaces"
            )));
        }
        if password.is_empty() {
            return Err(FlightServerError::Config("the password is empty".into()));
        }
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| FlightServerError::Config(format!("salt: {e}")))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| FlightServerError::Config(format!("hashing the password: {e}")))?
            .to_string();
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
        let mut lines: Vec<String> = existing
            .lines()
            .filter(|l| l.split_once(':').is_none_or(|(n, _)| n.trim() != name))
            .map(str::to_string)
            .collect();
        lines.push(format!("{name}:{hash}"));
        std::fs::write(path, lines.join("\n") + "\n")
            .map_err(|e| FlightServerError::Config(format!("users file {}: {e}", path.display())))
    }

    /// Whether `password` is `name`'s.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let Some(hash) = self.hashes.get(name) else {
            return false;
        };
        let Ok(hash) = PasswordHash::new(hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    }
}

/// The server's authentication policy.
#[derive(Debug)]
pub enum Auth {
    /// No users file: anyone may connect (the server then listens on loopback only).
    Open,
    /// Users must authenticate; tokens map to user names.
    Users {
        users: Users,
        tokens: Mutex<HashMap<String, (String, Instant)>>,
    },
}

impl Auth {
    /// Authentication with `users`.
    pub fn with_users(users: Users) -> Self {
        Auth::Users {
            users,
            tokens: Mutex::default(),
        }
    }

    /// Handshake: checks `authorization: Basic …` and returns a Bearer token for it. An open
    /// server hands out a token too, as JDBC always handshakes.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let token = hex_token();
        match self {
            Auth::Open => Ok(token),
            Auth::Users { users, tokens } => {
                let (name, password) = basic_credentials(metadata)?;
                if !users.verify(&name, &password) {
                    return Err(Status::unauthenticated("wrong user name or password"));
                }
                let mut tokens = tokens.lock().expect("token table lock");
                let now = Instant::now();
                tokens.retain(|_, (_, issued)| now.duration_since(*issued) < TOKEN_LIFETIME);
                tokens.insert(token.clone(), (name, now));
                Ok(token)
            }
        }
    }

    /// Checks the Bearer token of a call; returns the user name ("anonymous" on an open server).
    pub fn authorize(&self, metadata: &MetadataMap) -> Result<String, Status> {
        match self {
            Auth::Open => Ok("anonymous".to_string()),
            Auth::Users { tokens, .. } => {
                let header = authorization(metadata)?;
                let token = header.strip_prefix("Bearer ").ok_or_else(|| {
                    Status::unauthenticated(
                        "expected authorization: Bearer <token> (call Handshake first)",
                    )
                })?;
                let tokens = tokens.lock().expect("token table lock");
                match tokens.get(token.trim()) {
                    Some((name, issued)) if issued.elapsed() < TOKEN_LIFETIME => Ok(name.clone()),
                    Some(_) => Err(Status::unauthenticated(
                        "the token has expired: handshake again",
                    )),
                    None => Err(Status::unauthenticated("unknown token: handshake again")),
                }
            }
        }
    }
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

    #[test]
    fn users_file_round_trip_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::add(&path, "ana", "s3cret").unwrap();
        Users::add(&path, "bo", "other").unwrap();
        Users::add(&path, "ana", "changed").unwrap();
        let users = Users::load(&path).unwrap();
        assert!(
            users.verify("ana", "changed")
                && !users.verify("ana", "s3cret")
                && users.verify("bo", "other")
        );
        assert!(
            !std::fs::read_to_string(&path).unwrap().contains("changed"),
            "only hashes are stored"
        );

        let auth = Auth::with_users(users);
        assert_eq!(
            auth.handshake(&basic("ana", "wrong")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // "ana:changed" needs one `=` of padding, which Go's client leaves out.
        let unpadded = basic_encoded_by(&STANDARD_NO_PAD, "ana", "changed");
        assert!(auth.handshake(&unpadded).is_ok());
        let token = auth.handshake(&basic("ana", "changed")).unwrap();
        let mut bearer = MetadataMap::new();
        bearer.insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert_eq!(auth.authorize(&bearer).unwrap(), "ana");
        assert_eq!(
            auth.authorize(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut forged = MetadataMap::new();
        forged.insert("authorization", "Bearer 00".parse().unwrap());
        assert_eq!(
            auth.authorize(&forged).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
