//! The API's error answer: a status, a stable code, a message a person can act on and,
//! for bad input, the field at fault. Also the JSON body extractor that produces it.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    #[error("{message}")]
    Unprocessable { field: String, message: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The thing existed and is gone for good (an expired access package).
    #[error("{0}")]
    Gone(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("too many failed authentications from this address; try again in {0} s")]
    Throttled(u64),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

/// The JSON body of an error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `invalid_field`, `conflict`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The path of the field at fault, e.g. `identities[0].kind`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// A 422 naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        match self {
            ApiError::BadRequest { field, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_body", field.clone())
            }
            ApiError::Unprocessable { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                Some(field.clone()),
            ),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::Gone(_) => (StatusCode::GONE, "gone", None),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
            }
            ApiError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "throttled", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }
}

impl From<crate::request::lifecycle::Refusal> for ApiError {
    fn from(refusal: crate::request::lifecycle::Refusal) -> Self {
        ApiError::Conflict(refusal.to_string())
    }
}

/// Gives the answers that axum makes itself (a method the path does not take, a path
/// parameter that is not UTF-8) the API's `{code, message}` shape; pages keep their HTML.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!(
                "this path does not take this method; it takes {}",
                allow
                    .as_ref()
                    .and_then(|a| a.to_str().ok())
                    .unwrap_or("other methods")
            ),
        ),
        StatusCode::NOT_FOUND => (
            "not_found",
            "no such endpoint; the API is described at /v1/openapi.json".to_owned(),
        ),
        s if s.is_server_error() => ("internal", "internal error".to_owned()),
        _ => (
            "invalid_request",
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("bad request")
                    .to_owned()
            } else {
                text
            },
        ),
    };
    let mut answer = (
        status,
        axum::Json(ErrorBody {
            code,
            message,
            field: None,
        }),
    )
        .into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// How long a client is told to wait before trying again after an outage.
const RETRY_AFTER_OUTAGE_SECS: u64 = 5;

/// What is unavailable, when an error is an outage (the database unreachable, restarting,
/// out of disk or busy) rather than a bug: the client should try again later.
pub fn outage(error: &anyhow::Error) -> Option<&'static str> {
    for cause in error.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::StorageFull
        {
            return Some("the disk of oubli's database is full");
        }
        let Some(sql) = cause.downcast_ref::<sqlx::Error>() else {
            continue;
        };
        match sql {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => return Some("oubli's database cannot be reached"),
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                let message = db.message().to_ascii_lowercase();
                // SQLite: full, I/O error, busy, locked; PostgreSQL: connection
                // exceptions, shutting down or starting up, out of resources.
                if matches!(code.as_ref(), "13" | "10" | "5" | "6" | "517" | "261")
                    || (code.len() > 2 && code.parse::<u32>().is_ok_and(|c| c & 0xff == 10))
                    || message.contains("database or disk is full")
                {
                    return Some("oubli's database cannot write now (disk full or busy)");
                }
                if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
                    return Some("oubli's database is restarting or out of resources");
                }
                // PostgreSQL broke a deadlock or a serialisation conflict between two
                // writers by rolling this one back: nothing of it was kept.
                if code == "40P01" || code == "40001" {
                    return Some(
                        "oubli's database rolled this step back to settle a conflict with another writer",
                    );
                }
            }
            _ => {}
        }
    }
    None
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(error) = &self
            && let Some(what) = outage(error)
        {
            tracing::warn!(error = format!("{error:#}"), "an API request met an outage");
            let body = ErrorBody {
                code: "unavailable",
                message: format!(
                    "{what}; try again later (a submission with the same Idempotency-Key, which makes a retry safe)"
                ),
                field: None,
            };
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_OUTAGE_SECS),
            );
            return response;
        }
        let (status, code, field) = self.parts();
        if let ApiError::Internal(error) = &self {
            tracing::error!(error = format!("{error:#}"), "API request failed");
        }
        let body = ErrorBody {
            code,
            message: self.to_string(),
            field,
        };
        let mut response = (status, axum::Json(body)).into_response();
        match &self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Throttled(seconds) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            _ => {}
        }
        response
    }
}

/// A JSON body, rejected with [`ApiError`] naming the field at fault.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::BadRequest {
                field: None,
                message: "expected a JSON body with Content-Type: application/json".into(),
            });
        }
        let bytes = read_limited(request).await?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = strip_position(&inner);
            if !matches!(inner.classify(), serde_json::error::Category::Data) {
                // Valid JSON that a field cannot take (a number or `null` where one of
                // several names is expected) is reported by serde_json as a syntax
                // error: name the field.
                if path != "." && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() {
                    return ApiError::Unprocessable {
                        field: path.clone(),
                        message: format!("{path} does not take this value ({message})"),
                    };
                }
                return ApiError::BadRequest {
                    field: None,
                    message: format!("the body is not valid JSON: {message}"),
                };
            }
            // A missing field is reported at its parent; name the field itself.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next());
            let field = match (path.as_str(), missing) {
                (".", Some(name)) => name.to_owned(),
                (parent, Some(name)) => format!("{parent}.{name}"),
                (".", None) => {
                    return ApiError::BadRequest {
                        field: None,
                        message,
                    };
                }
                (path, None) => path.to_owned(),
            };
            ApiError::Unprocessable { field, message }
        })?;
        deserializer.end().map_err(|e| ApiError::BadRequest {
            field: None,
            message: format!("trailing data after the JSON body: {e}"),
        })?;
        Ok(Json(value))
    }
}

/// Reads a JSON body of at most [`super::MAX_JSON_BODY`] bytes. A larger body is still
/// read (up to a bound) and discarded, so that the client receives the 413 instead of a
/// connection reset while it is still sending.
async fn read_limited(request: Request) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt;
    const DRAIN: usize = 16 << 20;
    let mut stream = request.into_body().into_data_stream();
    let mut body = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest {
            field: None,
            message: format!("reading the body failed: {e}"),
        })?;
        total += chunk.len();
        if total <= super::MAX_JSON_BODY {
            body.extend_from_slice(&chunk);
        } else if total > DRAIN {
            break;
        }
    }
    if total > super::MAX_JSON_BODY {
        return Err(ApiError::PayloadTooLarge(super::MAX_JSON_BODY));
    }
    Ok(body)
}

/// serde_json's message without its " at line 1 column 42" suffix.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
