//! Who may talk to a worker, and over what: every request between nodes is signed with the
//! cluster's shared secret, and the traffic is TLS when the workers have a certificate.
//!
//! **Why a shared secret and not mutual TLS.** Mutual TLS needs a certificate authority and a
//! client certificate per node, issued and rotated; a cluster of tokenledger nodes already has
//! one secret every node must share anyway (the data location's credentials). A secret in a
//! file or an environment variable is one thing to deploy and rotate. It never crosses the
//! network: each request carries an HMAC-SHA256 over
//!
//! - the RPC's path, a timestamp and a random nonce,
//! - the query's settings (the `x-datafusion-distributed-config-*` headers: the price
//!   fingerprint and the tenant scope a worker enforces), and
//! - a SHA-256 of the request's first message (the plan, for the call that sets one),
//!
//! so a worker refuses a request from a node without the secret, a request whose plan or scope
//! was changed on the way, one older than [`MAX_SKEW`] and one it has seen before (a replay).
//! TLS (the workers' `--tls-cert`, the coordinators' `--worker-ca`) keeps the rows themselves
//! private; signatures alone do not. Clocks must agree within [`MAX_SKEW`] (NTP).

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Request, Response, request::Parts};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{DistributedError, Result};

/// The header that carries a request's signature: `<unix ms>.<nonce hex>.<HMAC hex>`.
pub const SIGNATURE_HEADER: &str = "x-tokenledger-signature";
/// How far a request's timestamp may be from the worker's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(60);
/// The shortest secret taken: 32 bytes, the HMAC-SHA256 key size.
pub const MIN_SECRET_BYTES: usize = 32;
/// The headers that carry a query's settings to workers; all of them are signed.
const CONFIG_HEADER_PREFIX: &str = "x-datafusion-distributed-config-";
/// The largest first message read to check its signature (plans are far smaller).
const MAX_FIRST_MESSAGE: usize = 256 << 20;
/// What a signature covers first: the scheme and its version.
const SCHEME: &[u8] = b"tokenledger-worker-request/1";

/// The cluster's shared secret, as an HMAC key. It is never printed.
pub struct ClusterKey(hmac::Key);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(…)")
    }
}

impl ClusterKey {
    /// A key from the secret's bytes (surrounding whitespace ignored); at least
    /// [`MIN_SECRET_BYTES`].
    pub fn from_secret(secret: &[u8]) -> Result<ClusterKey> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(DistributedError::Secret(format!(
                "the cluster secret has {} bytes; it needs at least {MIN_SECRET_BYTES} \
                 (e.g. `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        Ok(ClusterKey(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The key in file `path`, which only its owner may read.
    pub fn from_file(path: &Path) -> Result<ClusterKey> {
        let refuse = |reason: String| {
            DistributedError::Secret(format!("cluster secret file {}: {reason}", path.display()))
        };
        tokenledger_engine::access::users::refuse_if_others_may_read(path)
            .map_err(|e| refuse(e.to_string()))?;
        let secret = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
        ClusterKey::from_secret(&secret).map_err(|e| refuse(e.to_string()))
    }

    /// The signature header for a request with these `parts` and first message.
    fn sign(&self, parts: &Parts, first_message: &[u8]) -> HeaderValue {
        let millis = now_millis();
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let nonce = hex(&nonce);
        let tag = hmac::sign(&self.0, &signed_text(parts, millis, &nonce, first_message));
        let value = format!("{millis}.{nonce}.{}", hex(tag.as_ref()));
        HeaderValue::from_str(&value).expect("digits and hex are a valid header")
    }
}

/// What a signature covers; see the module documentation.
fn signed_text(parts: &Parts, millis: u64, nonce: &str, first_message: &[u8]) -> Vec<u8> {
    let mut text = Vec::with_capacity(512);
    for field in [
        SCHEME,
        parts.uri.path().as_bytes(),
        millis.to_string().as_bytes(),
    ] {
        text.extend_from_slice(field);
        text.push(b'\n');
    }
    text.extend_from_slice(nonce.as_bytes());
    text.push(b'\n');
    let mut settings: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with(CONFIG_HEADER_PREFIX))
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    settings.sort();
    for (name, value) in settings {
        text.extend_from_slice(name.as_bytes());
        text.push(b'=');
        text.extend_from_slice(value);
        text.push(b'\n');
    }
    text.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, first_message).as_ref());
    text
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads a gRPC request body up to the end of its first message (a 5-byte frame header and
/// the message) and returns that message's frame and the body as it was, to be sent on.
async fn first_message(mut body: Body) -> (Bytes, Body) {
    let mut read = BytesMut::new();
    let mut held = None;
    let first_len = |read: &[u8]| {
        (read.len() >= 5)
            .then(|| 5 + u32::from_be_bytes([read[1], read[2], read[3], read[4]]) as usize)
    };
    while first_len(&read).is_none_or(|len| read.len() < len) && read.len() <= MAX_FIRST_MESSAGE {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => read.extend_from_slice(&data.copy_to_bytes(data.remaining())),
                Err(trailers) => {
                    held = Some(Ok(trailers));
                    break;
                }
            },
            Some(Err(status)) => {
                held = Some(Err(status));
                break;
            }
            None => break,
        }
    }
    let read = read.freeze();
    let first = match first_len(&read) {
        Some(len) if len <= read.len() => read.slice(..len),
        _ => read.clone(),
    };
    let replay = futures::stream::iter(
        (!read.is_empty())
            .then(|| Ok(http_body::Frame::data(read)))
            .into_iter()
            .chain(held),
    );
    let rest = BodyStream::new(body);
    (first, Body::new(StreamBody::new(replay.chain(rest))))
}

/// A client service that signs every request (see the module documentation).
#[derive(Clone)]
pub struct Signed<S> {
    inner: S,
    key: Arc<ClusterKey>,
}

impl<S> Signed<S> {
    /// `inner` (a gRPC channel), its requests signed with `key`.
    pub fn new(inner: S, key: Arc<ClusterKey>) -> Self {
        Signed { inner, key }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Signed<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let key = Arc::clone(&self.key);
        call_after_first_message(&mut self.inner, request, move |parts, first| {
            let signature = key.sign(parts, first);
            parts.headers.insert(SIGNATURE_HEADER, signature);
            None
        })
    }
}

/// Checks signatures on a worker: the key, the clock window and the nonces seen within it.
pub struct Verifier {
    key: Arc<ClusterKey>,
    /// Nonces of accepted requests, with their timestamps; forgotten after [`MAX_SKEW`] × 2.
    seen: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    /// A verifier of requests signed with `key`.
    pub fn new(key: Arc<ClusterKey>) -> Self {
        Verifier {
            key,
            seen: Mutex::default(),
        }
    }

    /// `Ok` for a request signed with the key, within the clock window, not seen before;
    /// otherwise why not (never the header's value).
    pub fn verify(&self, parts: &Parts, first_message: &[u8]) -> std::result::Result<(), String> {
        let value = parts
            .headers
            .get(SIGNATURE_HEADER)
            .ok_or("the request is not signed with the cluster secret")?;
        let malformed = || "the request's signature is malformed".to_string();
        let text = value.to_str().map_err(|_| malformed())?;
        let mut fields = text.splitn(3, '.');
        let (Some(millis), Some(nonce), Some(tag)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed());
        };
        let millis: u64 = millis.parse().map_err(|_| malformed())?;
        let tag = unhex(tag).ok_or_else(malformed)?;
        if nonce.len() != 32 || unhex(nonce).is_none() {
            return Err(malformed());
        }
        hmac::verify(
            &self.key.0,
            &signed_text(parts, millis, nonce, first_message),
            &tag,
        )
        .map_err(|_| "the request is not signed with this cluster's secret".to_string())?;
        let now = now_millis();
        let skew = MAX_SKEW.as_millis() as u64;
        if now.abs_diff(millis) > skew {
            return Err(format!(
                "the request was signed {}s from this worker's clock (at most {}s: are the \
                 clocks synchronized?)",
                now.abs_diff(millis) / 1000,
                MAX_SKEW.as_secs()
            ));
        }
        // Only signed requests reach this point, so nobody without the key can fill the map.
        let mut seen = self.seen.lock().expect("nonce lock");
        seen.retain(|_, at| now.abs_diff(*at) <= 2 * skew);
        if seen.insert(nonce.to_string(), millis).is_some() {
            return Err("the request was already received once (a replay)".to_string());
        }
        Ok(())
    }
}

/// The worker's layer that answers `UNAUTHENTICATED` to every request [`Verifier`] refuses.
#[derive(Clone)]
pub struct VerifyLayer(pub Arc<Verifier>);

impl<S> Layer<S> for VerifyLayer {
    type Service = Verified<S>;

    fn layer(&self, inner: S) -> Verified<S> {
        Verified {
            inner,
            verifier: Arc::clone(&self.0),
        }
    }
}

/// A worker's service behind [`VerifyLayer`].
#[derive(Clone)]
pub struct Verified<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S> Service<Request<Body>> for Verified<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let verifier = Arc::clone(&self.verifier);
        call_after_first_message(&mut self.inner, request, move |parts, first| {
            let reason = verifier.verify(parts, first).err()?;
            tracing::warn!(rpc = parts.uri.path(), %reason, "worker request refused");
            Some(Status::unauthenticated(format!("worker refused: {reason}")).into_http())
        })
    }
}

/// Calls `service` with `request` once `inspect` has seen the request's first message (and
/// may have changed its headers); when `inspect` answers instead, that answer is returned and
/// `service` is not called. The body goes on whole either way.
fn call_after_first_message<S, F>(
    service: &mut S,
    request: Request<Body>,
    inspect: F,
) -> BoxFuture<std::result::Result<S::Response, S::Error>>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    F: FnOnce(&mut Parts, &[u8]) -> Option<Response<Body>> + Send + 'static,
{
    // The service made ready is the one that must be called.
    let ready = service.clone();
    let mut inner = std::mem::replace(service, ready);
    Box::pin(async move {
        let (mut parts, body) = request.into_parts();
        let (first, body) = first_message(body).await;
        if let Some(answer) = inspect(&mut parts, &first) {
            return Ok(answer);
        }
        inner.call(Request::from_parts(parts, body)).await
    })
}

/// How a node reaches workers: the cluster secret it signs with, the certificate authority it
/// trusts for `https://` workers, and whether plain `http://` off loopback is allowed.
#[derive(Clone)]
pub struct ClusterSecurity {
    /// The cluster's shared secret.
    pub key: Arc<ClusterKey>,
    /// PEM certificates that sign the workers' TLS certificates (`--worker-ca`).
    pub worker_ca: Option<Vec<u8>>,
    /// Whether workers off loopback may be reached without TLS.
    pub allow_plaintext: bool,
}

impl std::fmt::Debug for ClusterSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecurity")
            .field("worker_ca", &self.worker_ca.is_some())
            .field("allow_plaintext", &self.allow_plaintext)
            .finish_non_exhaustive()
    }
}

impl ClusterSecurity {
    /// Signs with `key`; workers must be on loopback or reached over TLS.
    pub fn new(key: ClusterKey) -> Self {
        ClusterSecurity {
            key: Arc::new(key),
            worker_ca: None,
            allow_plaintext: false,
        }
    }
}
