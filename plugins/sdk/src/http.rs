//! Outgoing HTTP through `wasi:http`, to the hosts the connected system allows
//! (capability `http`).
//!
//! Secrets never enter the plugin: put `{{secret:NAME}}` in a header value and the host
//! replaces it on the way out, for the hosts that secret is bound to. Redirects are
//! followed here, hop by hop, so the host checks every hop against the allow-list.

use crate::{Error, Result};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

/// How many redirects [`send`] follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Whether sending the request twice has the effect of sending it once (RFC 9110
    /// §9.2.2), so that it may be sent again after a connection failed.
    pub fn is_idempotent(self) -> bool {
        matches!(self, Method::Get | Method::Put | Method::Delete)
    }
}

/// An outgoing request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// Adds a header; the value may hold `{{secret:NAME}}` placeholders.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self.body = Some(body.to_string().into_bytes());
        self
    }
}

/// A response, its body read in full (within the host's size cap).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`Error::Failed`] when the body is not JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Failed(format!("response is not JSON: {e}")))
    }

    /// Turns an unsuccessful status into the connector error the host expects: 429 and
    /// 5xx are `unavailable` (retried; `Retry-After` is quoted), 401 and 403 `denied`,
    /// any other 4xx `failed`.
    ///
    /// # Errors
    /// The error for a status outside 2xx.
    pub fn error_for_status(self) -> Result<Self> {
        self.error_for("the request", None)
    }

    /// As [`Response::error_for_status`], with a message that names `what` was asked
    /// (`GET /contacts/{id}`: the method and the configured path, not the URL, which may
    /// carry an identity) and quotes the start of the answer's body, every value of
    /// `hide` (the subject's identities) replaced by `[…]`, so that the cause can be
    /// seen without a proxy and without personal data in the task's error.
    ///
    /// # Errors
    /// The error for a status outside 2xx.
    pub fn error_for_status_of(self, what: &str, hide: &[&str]) -> Result<Self> {
        self.error_for(what, Some(hide))
    }

    fn error_for(self, what: &str, quote: Option<&[&str]>) -> Result<Self> {
        let status = self.status;
        if (200..=299).contains(&status) {
            return Ok(self);
        }
        let retry = self
            .header("retry-after")
            .map(|v| format!(", retry after {v}"))
            .unwrap_or_default();
        let excerpt = quote
            .map(|hide| excerpt(&self.body, hide))
            .unwrap_or_default();
        let said = if excerpt.is_empty() {
            String::new()
        } else {
            format!(": {excerpt}")
        };
        Err(match status {
            // `retry after N` last, where the host reads it (a body cannot override it).
            429 => Error::Unavailable(format!("{what}: rate limited (HTTP 429){said}{retry}")),
            500..=599 => {
                Error::Unavailable(format!("{what}: server error (HTTP {status}){said}{retry}"))
            }
            401 | 403 => Error::Denied(format!(
                "{what}: the system refused oubli's credentials (HTTP {status}){said}"
            )),
            _ => Error::Failed(format!("{what}: unexpected HTTP status {status}{said}")),
        })
    }
}

/// How much of an error's body is quoted, in characters.
const EXCERPT_CHARS: usize = 200;

/// The start of `body` on one line, each value of `hide` (as written, in any case, and
/// percent-encoded) replaced by `[…]`.
pub fn excerpt(body: &[u8], hide: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for value in hide.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        for form in [value.to_owned(), encode(value)] {
            line = replace_ignoring_case(&line, &form, "[…]");
        }
    }
    // Only the server's Retry-After header may set the host's delay.
    line = replace_ignoring_case(&line, "retry after", "retry-after");
    let mut out: String = line.chars().take(EXCERPT_CHARS).collect();
    if line.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Percent-encodes `text` for a query value or a path segment (RFC 3986: everything but
/// the unreserved characters).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `text` with every occurrence of `pattern`, compared in ASCII lower case, replaced.
fn replace_ignoring_case(text: &str, pattern: &str, with: &str) -> String {
    let (haystack, needle) = (text.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in haystack.match_indices(&needle) {
        out.push_str(&text[last..at]);
        out.push_str(with);
        last = at + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

/// Sends a request and follows up to [`MAX_REDIRECTS`] redirects.
///
/// # Errors
/// `denied` when the host refuses the destination, `unavailable` for network failures and
/// timeouts, `failed` for malformed URLs or a response over the size cap.
pub fn send(request: &Request) -> Result<Response> {
    let mut current = request.clone();
    for _ in 0..=MAX_REDIRECTS {
        let response = send_once(&current)?;
        if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(response);
        }
        let location = response
            .header("location")
            .ok_or_else(|| Error::Failed(format!("HTTP {} without Location", response.status)))?;
        current.url = resolve(&current.url, location)?;
        if response.status == 303 {
            current.method = Method::Get;
            current.body = None;
        }
    }
    Err(Error::Failed(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// How [`send_retrying`] retries a busy server.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Tries in all, the first one included.
    pub attempts: u32,
    /// The longest wait honoured inside the call, in seconds. A server that asks for a
    /// longer `Retry-After` gets an `unavailable` error quoting it, and the host retries
    /// the whole action after at least that long.
    pub max_wait_seconds: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            max_wait_seconds: 10,
        }
    }
}

/// Sends a request like [`send`], and retries it when the server answers 429 or 5xx:
/// after its `Retry-After` (in seconds) when it gives one within
/// [`Retry::max_wait_seconds`], else after half a second, doubling. A GET, PUT or DELETE
/// that got no answer (connection refused, reset or closed early, or a timeout) is sent
/// again the same way, since sending it twice does what sending it once does; the call's
/// deadline still holds. Returns the last
/// response, whatever its status: turn it into an error with
/// [`Response::error_for_status`].
///
/// # Errors
/// As [`send`].
pub fn send_retrying(request: &Request, retry: Retry) -> Result<Response> {
    let mut attempt = 1;
    loop {
        let backoff_ms = 500 << (attempt - 1).min(4);
        let response = match send(request) {
            Err(Error::Unavailable(_))
                if request.method.is_idempotent() && attempt < retry.attempts =>
            {
                sleep_ms(backoff_ms);
                attempt += 1;
                continue;
            }
            other => other?,
        };
        if !(response.status == 429 || response.status >= 500) || attempt >= retry.attempts {
            return Ok(response);
        }
        let wait_ms = match response.header("retry-after").map(str::trim) {
            Some(value) => match value.parse::<u64>() {
                Ok(seconds) if seconds <= retry.max_wait_seconds => seconds * 1000,
                // Too long to wait here, or an HTTP date: the host retries later.
                _ => return Ok(response),
            },
            None => backoff_ms,
        };
        sleep_ms(wait_ms);
        attempt += 1;
    }
}

/// Waits `ms` milliseconds on the host's monotonic clock. The call's deadline still holds:
/// the host stops the call at its deadline even in the middle of a wait.
pub fn sleep_ms(ms: u64) {
    wasi::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
}

struct Url<'a> {
    scheme: &'a str,
    authority: &'a str,
    path_and_query: &'a str,
}

fn parse(url: &str) -> Result<Url<'_>> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Failed(format!("not an absolute URL: {url}")))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(end);
    if authority.is_empty() {
        return Err(Error::Failed(format!("URL without host: {url}")));
    }
    Ok(Url {
        scheme,
        authority,
        path_and_query: if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        },
    })
}

/// Resolves a `Location` or `Link` target (absolute, `//host/…`, `/path` or relative)
/// against the URL it came from.
///
/// # Errors
/// [`Error::Failed`] when `base` is not an absolute URL.
pub fn resolve(base: &str, location: &str) -> Result<String> {
    // A URL the server chose (a redirect, a next-page link) is sent on as it is, but
    // braces are percent-encoded: the host fills `{{secret:…}}` placeholders in URLs, and
    // a server must not be able to ask for a secret by writing one.
    let location = location.replace('{', "%7B").replace('}', "%7D");
    let location = location.as_str();
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let base = parse(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{}://{rest}", base.scheme));
    }
    if location.starts_with('/') {
        return Ok(format!("{}://{}{location}", base.scheme, base.authority));
    }
    let dir = base.path_and_query.split('?').next().unwrap_or("/");
    let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!(
        "{}://{}{dir}{location}",
        base.scheme, base.authority
    ))
}

fn transport_error(code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Denied(
            "the host refused this destination (not on the system's allow-list)".into(),
        ),
        ErrorCode::DestinationIpProhibited => {
            Error::Denied("the host refused a loopback or private address".into())
        }
        ErrorCode::HttpResponseBodySize(_) => {
            Error::Failed("the response is larger than the system's response size cap".into())
        }
        ErrorCode::HttpRequestBodySize(_) => {
            Error::Failed("the request is larger than the system's request size cap".into())
        }
        ErrorCode::InternalError(Some(message)) => Error::Failed(message),
        other => Error::Unavailable(format!("HTTP transport error: {other:?}")),
    }
}

fn send_once(request: &Request) -> Result<Response> {
    let url = parse(&request.url)?;
    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone().into_bytes()))
        .collect();
    let headers = Fields::from_list(&entries)
        .map_err(|e| Error::Failed(format!("invalid request header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method {
        Method::Get => WasiMethod::Get,
        Method::Post => WasiMethod::Post,
        Method::Put => WasiMethod::Put,
        Method::Patch => WasiMethod::Patch,
        Method::Delete => WasiMethod::Delete,
    };
    let scheme = match url.scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(Error::Failed(format!("unsupported URL scheme {other}"))),
    };
    let invalid = |what: &str| Error::Failed(format!("invalid {what} in {}", request.url));
    outgoing
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|()| invalid("host"))?;
    outgoing
        .set_path_with_query(Some(url.path_and_query))
        .map_err(|()| invalid("path"))?;
    let body = outgoing.body().map_err(|()| invalid("body"))?;
    let pending = outgoing_handler::handle(outgoing, None).map_err(transport_error)?;
    if let Some(bytes) = &request.body {
        let stream = body.write().map_err(|()| invalid("body"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| Error::Unavailable(format!("sending the request body: {e:?}")))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(body, None).map_err(transport_error)?;

    pending.subscribe().block();
    let incoming = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(transport_error(code)),
        Some(Err(())) | None => return Err(Error::Failed("the response was already taken".into())),
    };
    let status = incoming.status();
    let headers = incoming
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let body = incoming.consume().map_err(|()| invalid("response body"))?;
    let stream = body.stream().map_err(|()| invalid("response body"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match wasi::http::types::http_error_code(&e) {
                    Some(code) => transport_error(code),
                    None => {
                        Error::Unavailable(format!("reading the response: {}", e.to_debug_string()))
                    }
                });
            }
        }
    }
    drop(stream);
    IncomingBody::finish(body);
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::{EXCERPT_CHARS, Error, Response, excerpt, resolve};

    #[test]
    fn error_excerpts_name_the_cause_without_the_identity() {
        let body = b"{\n  \"error\": \"no user Jane.Doe@Example.org\",  \"query\": \"email=jane.doe%40example.org\" }";
        let quoted = excerpt(body, &["jane.doe@example.org"]);
        assert_eq!(
            quoted,
            "{ \"error\": \"no user […]\", \"query\": \"email=[…]\" }"
        );
        let long = "x".repeat(500);
        assert_eq!(
            excerpt(long.as_bytes(), &[]).chars().count(),
            EXCERPT_CHARS + 1
        );
        assert_eq!(excerpt(b"Retry after 86400", &[]), "retry-after 86400");
        let refused = Response {
            status: 400,
            headers: Vec::new(),
            body: b"Could not parse an empty JSON body".to_vec(),
        }
        .error_for_status_of("PATCH /users/{id}", &[])
        .unwrap_err();
        assert!(
            matches!(&refused, Error::Failed(m) if m == "PATCH /users/{id}: unexpected HTTP status 400: Could not parse an empty JSON body"),
            "{refused:?}"
        );
    }

    #[test]
    fn resolves_redirect_locations() {
        assert_eq!(
            resolve("https://a.example/x", "/next?k={{secret:DB}}").unwrap(),
            "https://a.example/next?k=%7B%7Bsecret:DB%7D%7D",
            "a server cannot write a placeholder"
        );
        let base = "https://api.example.org/v1/people?page=2";
        assert_eq!(
            resolve(base, "https://other.example/x").unwrap(),
            "https://other.example/x"
        );
        assert_eq!(
            resolve(base, "/v2/people").unwrap(),
            "https://api.example.org/v2/people"
        );
        assert_eq!(
            resolve(base, "//cdn.example/a").unwrap(),
            "https://cdn.example/a"
        );
        assert_eq!(
            resolve(base, "next").unwrap(),
            "https://api.example.org/v1/next"
        );
    }
}
