//! What a completed request yields: the access package (JSON and HTML) and the signed
//! erasure certificate.

use super::*;

/// The access package of a completed access request, or why there is none; every
/// download is an audit event.
async fn download(
    app: &App,
    caller: &Caller,
    id: &str,
    format: &str,
) -> Result<serde_json::Value, ApiError> {
    if caller.role == Role::Controller {
        // A controller's own order (through OpenDSR): its `results_url` is this package.
        let by: Option<String> =
            sqlx::query_scalar("SELECT submitted_by FROM requests WHERE id = $1")
                .bind(id)
                .fetch_optional(&app.store.read)
                .await?;
        if by.as_deref() != Some(caller.token_id.as_str()) {
            return Err(ApiError::Forbidden(
                "a controller's token downloads only the packages of the requests it sent itself (through OpenDSR)".into(),
            ));
        }
    } else {
        require(caller, &[Role::Dpo, Role::Admin])?;
    }
    let request = visible(app, caller, id).await?;
    let package = match crate::evidence::package::build(crate::api::evidence(app), &request).await?
    {
        Ok(package) => package,
        Err(crate::evidence::package::Unavailable::NotReady(m)) => {
            return Err(ApiError::Conflict(m));
        }
        Err(crate::evidence::package::Unavailable::Expired(m)) => return Err(ApiError::Gone(m)),
    };
    let mut tx = app.store.begin().await?;
    audit::append(
        &mut tx,
        &caller.actor(),
        "package.downloaded",
        Some(id),
        json!({ "format": format }),
    );
    tx.commit().await?;
    Ok(package)
}

/// Download the access package (Art. 15, Art. 20): every record each system exported,
/// per system and collection, with each system's Art. 15 information. Available until
/// `expires_at`; 410 after.
#[utoipa::path(get, path = "/v1/requests/{id}/package", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "the package as JSON", body = crate::api::schemas::AccessPackage), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn package(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    Ok(axum::Json(download(&app, &caller, &id, "json").await?))
}

/// The access package as a human-readable HTML page for the data subject.
#[utoipa::path(get, path = "/v1/requests/{id}/package.html", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "the package as HTML", content_type = "text/html", body = String), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn package_html(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::response::Html<String>, ApiError> {
    let package = download(&app, &caller, &id, "html").await?;
    Ok(axum::response::Html(crate::evidence::package::html(
        &package,
    )))
}

/// The language of a printable certificate.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CertificatePage {
    /// `en` (the default) or `fr`.
    pub lang: Option<crate::evidence::certificate_html::Lang>,
}

/// The erasure certificate as a printable page ("PV de destruction"), in English or
/// French: what the signed certificate says, for people; the signed JSON is the proof.
#[utoipa::path(get, path = "/v1/requests/{id}/certificate.html", tag = "requests", params(("id" = String, Path), CertificatePage),
    responses((status = 200, description = "the certificate as HTML", content_type = "text/html", body = String), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn certificate_html(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<CertificatePage>,
) -> Result<axum::response::Html<String>, ApiError> {
    let request = visible(&app, &caller, &id).await?;
    let signed = crate::evidence::erasure_certificate(&app.store, &app.keys, &request)
        .await?
        .map_err(ApiError::Conflict)?;
    let lang = page
        .lang
        .unwrap_or(crate::evidence::certificate_html::Lang::En);
    Ok(axum::response::Html(
        crate::evidence::certificate_html::html(&signed, lang),
    ))
}

/// The signed erasure certificate of a completed erasure: per system, the plugin and what
/// was deleted, anonymised or retained (with its legal basis), and the verification. It
/// holds no personal data; verify it offline with the key from `/v1/keys`.
#[utoipa::path(get, path = "/v1/requests/{id}/certificate", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "The certificate and its signature", body = crate::api::schemas::SignedCertificate), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn certificate(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let request = visible(&app, &caller, &id).await?;
    let signed = crate::evidence::erasure_certificate(&app.store, &app.keys, &request)
        .await?
        .map_err(ApiError::Conflict)?;
    Ok(axum::Json(signed))
}
