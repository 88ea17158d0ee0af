//! Who may connect over Flight SQL and what they see: Basic credentials exchanged for a Bearer
//! token at Handshake, and the token checked on every other call.
//!
//! Passwords are checked by the engine's login policy ([`Logins`]: the users file, hashing on
//! a few blocking threads, lockout after repeated failures), the same for every port of the
//! server. Tokens are random, expire, and are kept only as SHA-256 digests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};
use tokenledger_engine::TenantScope;
use tokenledger_engine::access::logins::{LoginRefused, Logins};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// How long a Bearer token stays valid after Handshake.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

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

/// Logins of a server with users: the shared login policy and the tokens issued.
#[derive(Debug)]
pub struct TokenLogins {
    logins: Arc<Logins>,
    /// SHA-256 of each live token → (user, their scope, when issued).
    tokens: Mutex<HashMap<[u8; 32], (String, TenantScope, Instant)>>,
    token_lifetime: Duration,
}

/// The server's authentication policy.
#[derive(Debug)]
pub enum Auth {
    /// No users file: anyone may connect and sees everything (the server then listens on
    /// loopback only).
    Open,
    /// Users must authenticate; tokens map to users and their tenants.
    Users(TokenLogins),
}

/// A refused login as Flight SQL answers it: wrong credentials UNAUTHENTICATED, a lockout or
/// too many logins at once RESOURCE_EXHAUSTED (retry later).
fn refusal_status(refused: LoginRefused) -> Status {
    match refused {
        LoginRefused::WrongPassword => Status::unauthenticated(refused.to_string()),
        LoginRefused::LockedOut { .. } | LoginRefused::Busy => {
            Status::resource_exhausted(refused.to_string())
        }
    }
}

impl Auth {
    /// Authentication through `logins`.
    pub fn with_logins(logins: Arc<Logins>) -> Self {
        Self::with_token_lifetime(logins, TOKEN_LIFETIME)
    }

    /// Authentication through `logins` whose tokens last `token_lifetime`.
    pub fn with_token_lifetime(logins: Arc<Logins>, token_lifetime: Duration) -> Self {
        Auth::Users(TokenLogins {
            logins,
            tokens: Mutex::default(),
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
                let scope = logins
                    .logins
                    .verify(&name, &password, peer)
                    .await
                    .map_err(refusal_status)?;
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
    use tokenledger_engine::access::logins::FAILURES_BEFORE_LOCKOUT;
    use tokenledger_engine::access::users::{Grant, Users};

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

    const HOME: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    /// Logins over a users file holding ana (password "right", tenants acme and globex).
    fn ana(dir: &tempfile::TempDir) -> Arc<Logins> {
        let path = dir.path().join("users");
        let grant = Grant::from_tenants(&["acme".into(), "globex".into()]).unwrap();
        Users::add(&path, "ana", "right", &grant).unwrap();
        Arc::new(Logins::new(Users::load(&path).unwrap()))
    }

    #[tokio::test]
    async fn a_handshake_gives_a_token_kept_only_as_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::with_logins(ana(&dir));
        let wrong = auth
            .handshake(&basic("ana", "wrong"), HOME)
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        // "ana:right" needs one `=` of padding, which Go's client leaves out.
        let unpadded = basic_encoded_by(&STANDARD_NO_PAD, "ana", "right");
        assert!(auth.handshake(&unpadded, HOME).await.is_ok());
        let token = auth.handshake(&basic("ana", "right"), HOME).await.unwrap();
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

    #[tokio::test]
    async fn a_locked_out_user_is_told_to_retry_later() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::with_logins(ana(&dir));
        for _ in 0..FAILURES_BEFORE_LOCKOUT {
            let e = auth
                .handshake(&basic("ana", "guess"), HOME)
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        let locked = auth
            .handshake(&basic("ana", "right"), HOME)
            .await
            .unwrap_err();
        assert_eq!(locked.code(), tonic::Code::ResourceExhausted, "{locked:?}");
        assert!(locked.message().contains("retry in"), "{locked:?}");
    }

    #[tokio::test]
    async fn tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::with_token_lifetime(ana(&dir), Duration::from_millis(100));
        let token = auth.handshake(&basic("ana", "right"), HOME).await.unwrap();
        assert!(auth.authorize(&bearer(&token), None).is_ok());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let expired = auth.authorize(&bearer(&token), None).unwrap_err();
        assert!(expired.message().contains("expired"), "{expired:?}");
    }
}
