//! Schemas of the OpenAPI document for answers built as JSON values (signed documents,
//! the access package), and the statuses every operation shares, added by [`Answers`].

use utoipa::openapi::{
    ContentBuilder, HttpMethod, ObjectBuilder, OpenApi, Ref, ResponseBuilder, Type,
    header::HeaderBuilder,
};

/// An Ed25519 signature over the canonical JSON of `certificate`; its key is in
/// `/v1/keys`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Signature {
    /// `Ed25519`.
    algorithm: String,
    key_id: String,
    /// Base64.
    value: String,
}

/// The head of the audit trail as signed: its last event's position and hash.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AuditHead {
    /// `oubli.audit-head`.
    #[schema(rename = "type")]
    kind: String,
    version: u32,
    /// The position of the last event.
    seq: i64,
    /// The hash of the last event, SHA-256 in hex.
    hash: String,
    /// When the last event was appended, in ms since the Unix epoch.
    at: i64,
    /// When the head was signed, in ms since the Unix epoch.
    signed_at: i64,
}

/// The signed head of the audit trail.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SignedAuditHead {
    certificate: AuditHead,
    signature: Signature,
}

/// The erasure certificate as signed (see the README's "Evidence"): per system, the
/// plugin, what was deleted, anonymised or retained (with its legal basis), the
/// verification and the runs.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErasureCertificate {
    /// `oubli.erasure-certificate`.
    #[schema(rename = "type")]
    kind: String,
    version: u32,
    /// The oubli release that issued it.
    issuer: String,
    /// `{id, external_ref, received_at, completed_at}`.
    #[schema(value_type = Object)]
    request: (),
    /// `{id, name}`.
    #[schema(value_type = Object)]
    controller: (),
    /// `{identities}`: the subject's identities as keyed hashes.
    #[schema(value_type = Object)]
    subject: (),
    /// Records located across the systems; null when a system's count is unknown.
    records_found: Option<u64>,
    /// Whether no system held any record of the subject: said, never dressed as success.
    nothing_found: Option<bool>,
    /// One entry per connected system.
    #[schema(value_type = Vec<Object>)]
    systems: (),
}

/// A signed erasure certificate.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SignedCertificate {
    certificate: ErasureCertificate,
    signature: Signature,
}

/// The access package (Art. 15, Art. 20).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AccessPackage {
    /// `oubli-access-package/1`.
    format: String,
    request_id: String,
    /// `{id, name}`.
    #[schema(value_type = Option<Object>)]
    controller: (),
    received_at: String,
    completed_at: Option<String>,
    /// When the package stops being available.
    expires_at: Option<String>,
    /// Per system: its Art. 15 information, what was searched and every record
    /// exported, per collection.
    #[schema(value_type = Vec<Object>)]
    systems: (),
    /// The subject's rights: `{article, right}`.
    #[schema(value_type = Vec<Object>)]
    rights: (),
}

/// Adds the answers every operation shares: for those that take a token, 401 (no token,
/// or not a valid one), 429 (too many failed authentications from the address) and 503
/// (oubli's database unavailable); 403 where a role is required; 404 on paths naming
/// something; 400 where a query or a body is read, 413 and 422 where a body is.
pub struct Answers;

/// The operations that refuse some roles (403).
const ROLE_RESTRICTED: &[&str] = &[
    "create",
    "list",
    "cancel",
    "extend",
    "approve",
    "reject",
    "retry",
    "results",
    "emails",
    "package",
    "package_html",
    "audit_events",
    "audit_head",
    "create_controller",
    "create_system",
    "list_systems",
    "upload_plugin",
    "list_plugins",
    "get_plugin",
    "create_token",
    "revoke_token",
    "configure_suppression",
    "end_suppression",
    "check_suppression",
    "remove_suppressed",
    "check_suppression_csv",
    "add_recipient",
    "list_recipients",
    "remove_recipient",
    "configure_subject_notices",
    "stop_subject_notices",
    "set_retention_rule",
    "remove_retention_rule",
    "dry_run_retention_rule",
];

impl utoipa::Modify for Answers {
    fn modify(&self, openapi: &mut OpenApi) {
        let error = |description: &str, retry_after: Option<&str>| {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if let Some(header) = retry_after {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::Integer))
                        .description(Some(header))
                        .build(),
                );
            }
            response.build()
        };
        for (path, item) in &mut openapi.paths.paths {
            for method in [
                HttpMethod::Get,
                HttpMethod::Post,
                HttpMethod::Put,
                HttpMethod::Delete,
            ] {
                let operation = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    HttpMethod::Put => item.put.as_mut(),
                    _ => item.delete.as_mut(),
                };
                let Some(operation) = operation else {
                    continue;
                };
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, response: utoipa::openapi::Response| {
                    responses
                        .entry(status.to_owned())
                        .or_insert(response.into());
                };
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add("401", error("No token, or not a valid one.", None));
                    add(
                        "429",
                        error(
                            "Too many failed authentications from this address.",
                            Some("Seconds before trying again."),
                        ),
                    );
                    add(
                        "503",
                        error(
                            "oubli's database is unavailable (unreachable, restarting, full): retry later.",
                            Some("Seconds before trying again."),
                        ),
                    );
                }
                if operation
                    .operation_id
                    .as_deref()
                    .is_some_and(|id| ROLE_RESTRICTED.contains(&id))
                {
                    add("403", error("The token's role may not do this.", None));
                }
                if path.contains('{') {
                    add(
                        "404",
                        error("Nothing of this id, or nothing the token may see.", None),
                    );
                }
                let in_query =
                    operation.parameters.iter().flatten().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    });
                if in_query {
                    add(
                        "400",
                        error(
                            "A query parameter is not of its type (`field` names it).",
                            None,
                        ),
                    );
                }
                if operation.request_body.is_some() {
                    add(
                        "400",
                        error(
                            "The body is not of the expected type or shape (`field` names the field when one is at fault).",
                            None,
                        ),
                    );
                    add("413", error("The body is larger than oubli takes.", None));
                    add(
                        "422",
                        error(
                            "A field is at fault (unknown, out of range, naming nothing that exists): `field` names it.",
                            None,
                        ),
                    );
                }
            }
        }
    }
}
