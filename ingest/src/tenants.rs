//! Tenant-bound writes: an exporter stores spans of its own tenants only, so the ledger's
//! numbers are only as wide as each writer's grant.
//!
//! The exporter's user (its users-file line) names the tenants it may write:
//! - a span or outcome naming one of them is stored as sent;
//! - one naming another tenant refuses the **whole request** (HTTP 403 / PERMISSION_DENIED):
//!   nothing of it is stored, so a batch is never half written;
//! - one naming none is given the user's tenant when the user has exactly one, and refuses the
//!   request otherwise (which tenant would it be?);
//! - an administrator (`*`), and everyone on a server without users (loopback only), writes
//!   any tenant and leaves rows without one as they are.
//!
//! A tenant filled in this way must survive a crash: the spool keeps the request as it arrived,
//! and a replay maps it again. So the spool record carries the tenant filled in, in an envelope
//! before the request ([`envelope`], [`open_envelope`]).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use tokenledger_engine::TenantScope;

use crate::auth::Exporter;
use crate::error::{IngestError, Result};
use crate::map::{Mapped, hex};

/// The first byte of an envelope. No protobuf message starts with it (field number 0 does not
/// exist), so a record that starts otherwise is a bare request, as older spools hold.
const ENVELOPE: u8 = 0;

/// Checks every row of `mapped` against what `writer` may write, and fills in the tenant of
/// rows without one where the writer has exactly one. Returns the tenant filled in, if any.
pub fn bind(mapped: &mut Mapped<'_>, writer: &Exporter) -> Result<Option<String>> {
    let TenantScope::Only(allowed) = &writer.scope else {
        return Ok(None);
    };
    let only = (allowed.len() == 1)
        .then(|| allowed.iter().next().cloned())
        .flatten();
    let refuse = |what: String| {
        IngestError::Forbidden(format!(
            "{what}; user {:?} writes tenants {} only: nothing of this request was stored",
            writer.user, writer.scope
        ))
    };
    let mut filled = false;
    let spans = mapped.spans.iter_mut().map(|row| {
        let name = || format!("span {}/{}", hex(row.trace_id), hex(row.span_id));
        (&mut row.tenant, name)
    });
    for (tenant, name) in spans {
        check_one(tenant, allowed, only.as_deref(), &mut filled)
            .map_err(|problem| refuse(format!("{} {problem}", name())))?;
    }
    for row in &mut mapped.outcomes {
        check_one(&mut row.tenant, allowed, only.as_deref(), &mut filled).map_err(|problem| {
            refuse(format!(
                "the outcome of work item {:?} {problem}",
                row.work_item_id
            ))
        })?;
    }
    // A refused span is a write too (into `rejected_spans`): one naming another tenant refuses
    // the request like a stored row would; one naming none gets the writer's only tenant, and
    // otherwise stays without one rather than sink its request's good spans.
    for row in &mut mapped.rejected {
        match (&row.tenant, only.as_deref()) {
            (Some(named), _) if !allowed.contains(named) => {
                return Err(refuse(format!(
                    "span {}/{} names tenant {named:?}",
                    row.trace_id, row.span_id
                )));
            }
            (None, Some(mine)) => {
                row.tenant = Some(mine.to_string());
                filled = true;
            }
            _ => {}
        }
    }
    Ok(only.filter(|_| filled))
}

/// One row's tenant against `allowed`; `only` is filled in where the row has none.
fn check_one(
    tenant: &mut Option<Cow<'_, str>>,
    allowed: &std::collections::BTreeSet<String>,
    only: Option<&str>,
    filled: &mut bool,
) -> std::result::Result<(), String> {
    match (tenant.as_deref(), only) {
        (Some(named), _) if allowed.contains(named) => Ok(()),
        (Some(named), _) => Err(format!("names tenant {named:?}")),
        (None, Some(mine)) => {
            *tenant = Some(Cow::Owned(mine.to_string()));
            *filled = true;
            Ok(())
        }
        (None, None) => Err("names no tenant (set tokenledger.tenant)".into()),
    }
}

/// Fills `tenant` into every row of `mapped` without one (a replay of a request whose tenant
/// was filled in when it was accepted).
pub fn fill(mapped: &mut Mapped<'_>, tenant: &str) {
    let rows = mapped
        .spans
        .iter_mut()
        .map(|row| &mut row.tenant)
        .chain(mapped.outcomes.iter_mut().map(|row| &mut row.tenant));
    for row_tenant in rows {
        if row_tenant.is_none() {
            *row_tenant = Some(Cow::Owned(tenant.to_string()));
        }
    }
    for row in &mut mapped.rejected {
        row.tenant.get_or_insert_with(|| tenant.to_string());
    }
}

/// The spool record for `request` (its encoded bytes) with `tenant` filled in: the request
/// itself when nothing was filled in, else `[0][length u16][tenant][request]`.
pub fn envelope(tenant: Option<&str>, request: Bytes) -> Bytes {
    let Some(tenant) = tenant else {
        return request;
    };
    let length = u16::try_from(tenant.len()).expect("tenant names are short");
    let mut record = BytesMut::with_capacity(3 + tenant.len() + request.len());
    record.put_u8(ENVELOPE);
    record.put_u16(length);
    record.put_slice(tenant.as_bytes());
    record.put_slice(&request);
    record.freeze()
}

/// The tenant filled in and the request's bytes of a spool record.
pub fn open_envelope(record: Bytes) -> (Option<String>, Bytes) {
    if record.first() != Some(&ENVELOPE) || record.len() < 3 {
        return (None, record);
    }
    let length = usize::from(u16::from_be_bytes([record[1], record[2]]));
    if record.len() < 3 + length {
        return (None, record);
    }
    let tenant = String::from_utf8_lossy(&record[3..3 + length]).into_owned();
    (Some(tenant), record.slice(3 + length..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::map_request;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use tokenledger_engine::integrity::Policy;

    #[test]
    fn an_envelope_round_trips_and_a_bare_request_is_left_alone() {
        let request = Bytes::from_static(b"\x0a\x02ab");
        assert_eq!(envelope(None, request.clone()), request);
        let sealed = envelope(Some("acme"), request.clone());
        assert_eq!(sealed[0], ENVELOPE);
        assert_eq!(
            open_envelope(sealed),
            (Some("acme".into()), request.clone())
        );
        assert_eq!(open_envelope(request.clone()), (None, request));
        assert_eq!(open_envelope(Bytes::new()), (None, Bytes::new()));
    }

    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..KeyValue::default()
        }
    }

    /// A request of one span per tenant given (`None`: a span without a tenant).
    fn request(tenants: &[Option<&str>]) -> ExportTraceServiceRequest {
        let spans = tenants
            .iter()
            .enumerate()
            .map(|(i, tenant)| {
                let mut attributes = vec![
                    text("tokenledger.work_item_id", &format!("W{i}")),
                    text("tokenledger.workflow", "claims"),
                ];
                attributes.extend(tenant.map(|t| text("tokenledger.tenant", t)));
                Span {
                    trace_id: vec![1; 16],
                    span_id: vec![i as u8 + 1; 8],
                    name: "step".into(),
                    start_time_unix_nano: 1_767_225_600_000_000_000,
                    end_time_unix_nano: 1_767_225_601_000_000_000,
                    attributes,
                    ..Span::default()
                }
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn writer(tenants: &[&str]) -> Exporter {
        Exporter {
            user: "ana".into(),
            scope: TenantScope::only(tenants.iter().copied()),
        }
    }

    fn tenants_of(mapped: &Mapped<'_>) -> Vec<Option<String>> {
        mapped
            .spans
            .iter()
            .map(|s| s.tenant.as_deref().map(str::to_string))
            .collect()
    }

    #[test]
    fn a_writer_of_one_tenant_fills_it_in_and_cannot_name_another() {
        let acme = writer(&["acme"]);
        let sent = request(&[Some("acme"), None]);
        let mut mapped = map_request(&sent, &Policy::now());
        assert_eq!(bind(&mut mapped, &acme).unwrap(), Some("acme".into()));
        assert_eq!(
            tenants_of(&mapped),
            [Some("acme".to_string()), Some("acme".to_string())]
        );
        let sent = request(&[Some("acme"), Some("globex")]);
        let error = bind(&mut map_request(&sent, &Policy::now()), &acme).unwrap_err();
        assert!(matches!(error, IngestError::Forbidden(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("names tenant \"globex\"")
                && message.contains("user \"ana\" writes tenants acme only"),
            "{message}"
        );
    }

    #[test]
    fn a_writer_of_several_tenants_must_name_one() {
        let both = writer(&["acme", "globex"]);
        let sent = request(&[Some("globex"), Some("acme")]);
        let mut mapped = map_request(&sent, &Policy::now());
        assert_eq!(bind(&mut mapped, &both).unwrap(), None);
        let sent = request(&[Some("acme"), None]);
        let error = bind(&mut map_request(&sent, &Policy::now()), &both).unwrap_err();
        assert!(error.to_string().contains("names no tenant"), "{error}");
    }

    #[test]
    fn an_administrator_writes_any_tenant_and_rows_without_one_stay_so() {
        let sent = request(&[Some("globex"), None]);
        let mut mapped = map_request(&sent, &Policy::now());
        let admin = Exporter {
            user: "root".into(),
            scope: TenantScope::All,
        };
        assert_eq!(bind(&mut mapped, &admin).unwrap(), None);
        assert_eq!(tenants_of(&mapped), [Some("globex".to_string()), None]);
    }

    #[test]
    fn a_replay_fills_in_what_was_filled_in() {
        let sent = request(&[Some("acme"), None]);
        let mut mapped = map_request(&sent, &Policy::now());
        fill(&mut mapped, "acme");
        assert_eq!(
            tenants_of(&mapped),
            [Some("acme".to_string()), Some("acme".to_string())]
        );
    }
}
