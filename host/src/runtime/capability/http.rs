//! The `http` capability: `wasi:http/outgoing-handler` restricted to a system's
//! allow-list, with every non-global address refused unless allowed, size caps on both
//! bodies, a cap on requests per call, and `{{secret:NAME}}` placeholders filled in on the
//! way out.
//!
//! The host resolves a name once, checks every address it resolves to, and connects to
//! an address it checked (no second lookup an attacker's DNS could answer differently).
//! A response is read whole (within its cap) before the guest sees it, so that every
//! secret of the system can be removed from its headers and body in every form
//! ([`SecretForms`]).
//!
//! The host does not follow redirects: the guest sees the 3xx and sends a new request,
//! which passes through the same checks, so every hop is checked.

use crate::runtime::system::{
    DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_REQUESTS,
    DEFAULT_MAX_RESPONSE_BYTES, Grant, Secret, SecretForms, has_placeholder, substitute_secrets,
    substitute_secrets_in_query,
};
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full, Limited};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostRule {
    /// Parses `host`, `host:port`, `*.domain` or `[v6]:port`.
    pub fn parse(rule: &str) -> Option<Self> {
        let rule = rule.trim().to_ascii_lowercase();
        let (host, port) = split_authority(&rule)?;
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(domain) => (domain.to_owned(), true),
            None => (host.to_owned(), false),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        valid.then_some(HostRule {
            host,
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|prefix| prefix.ends_with('.'))
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// Splits `host[:port]` or `[v6][:port]`; the host comes back without brackets.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => Some((authority, None)), // a bare IPv6 address
        None => Some((authority, None)),
    }
}

/// Whether an address is anything but a global unicast address: loopback, private,
/// shared, link-local, unique-local, documentation, benchmarking, multicast, reserved, or
/// an IPv6 form that carries such an IPv4 address (mapped, compatible, NAT64, 6to4,
/// Teredo).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, RFC 6890
        || (a == 198 && (18..20).contains(&b)) // benchmarking, RFC 2544
        || a >= 240 // reserved
}

fn is_private_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let embedded_v4 =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and the unspecified/loopback forms.
    if s[..6].iter().all(|&x| x == 0) {
        return true;
    }
    // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) reaches the embedded IPv4.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return s[2] == 1 || is_private_v4(embedded_v4(s[6], s[7]));
    }
    // 6to4 (2002::/16) embeds an IPv4 address in its second and third segments.
    if s[0] == 0x2002 {
        return is_private_v4(embedded_v4(s[1], s[2]));
    }
    // Teredo (2001::/32) tunnels to an obfuscated IPv4 address: refused outright.
    if s[0] == 0x2001 && s[1] == 0 {
        return true;
    }
    v6.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation, RFC 9637
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID
        || (s[0] == 0x0100 && s[1..4].iter().all(|&x| x == 0)) // discard-only
}

/// The HTTP policy of one call, shared with the send task.
#[derive(Clone)]
pub struct HttpPolicy {
    system: String,
    rules: Arc<Vec<HostRule>>,
    granted: bool,
    allow_private: bool,
    max_request: u64,
    max_response: u64,
    max_requests: u32,
    sent: Arc<AtomicU32>,
    in_flight: Arc<tokio::sync::Semaphore>,
    secrets: Arc<BTreeMap<String, Secret>>,
    secret_forms: Arc<SecretForms>,
    deadline: Instant,
    /// The first refusal of this call, so that a failed call reports why.
    pub denied: Arc<Mutex<Option<String>>>,
}

impl HttpPolicy {
    pub fn new(system: &Grant, deadline: Instant, denied: Arc<Mutex<Option<String>>>) -> Self {
        let grant = system.config.capabilities.http.as_ref();
        HttpPolicy {
            system: system.config.name.clone(),
            rules: Arc::new(
                grant
                    .map(|g| g.allow.iter().filter_map(|r| HostRule::parse(r)).collect())
                    .unwrap_or_default(),
            ),
            granted: grant.is_some(),
            allow_private: grant.is_some_and(|g| g.allow_private),
            max_request: grant
                .and_then(|g| g.max_request_bytes)
                .unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
            max_response: grant
                .and_then(|g| g.max_response_bytes)
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            max_requests: grant
                .and_then(|g| g.max_requests)
                .unwrap_or(DEFAULT_MAX_REQUESTS),
            sent: Arc::new(AtomicU32::new(0)),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                grant
                    .and_then(|g| g.max_concurrent_requests)
                    .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS) as usize,
            )),
            secrets: Arc::new(system.secrets.clone()),
            secret_forms: system.secret_forms.clone(),
            deadline,
            denied,
        }
    }

    fn deny(&self, reason: String) -> HttpError {
        tracing::warn!(system = %self.system, %reason, "plugin HTTP request refused");
        self.denied
            .lock()
            .expect("denied lock")
            .get_or_insert(reason);
        HttpError::HttpRequestDenied
    }

    /// Checks the destination and fills in secrets; the address check needs DNS and
    /// happens in [`Self::send`].
    fn prepare(&self, request: &mut http::Request<WasiBody>) -> Result<(String, u16), HttpError> {
        if !self.granted {
            return Err(self.deny(format!(
                "capability `http` is not granted to system `{}`",
                self.system
            )));
        }
        let uri = request.uri();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let rules = &self.rules;
        if !rules.iter().any(|r| r.matches(&host, port)) {
            return Err(self.deny(format!(
                "{host}:{port} is not on the allow-list of system `{}`",
                self.system
            )));
        }
        let sent = self.sent.fetch_add(1, Ordering::Relaxed);
        if sent >= self.max_requests {
            return Err(self.deny(format!(
                "the plugin sent more than {} HTTP requests in one call (capabilities.http.max_requests)",
                self.max_requests
            )));
        }
        let bound_here = |secret: &Secret| {
            secret.hosts.is_empty()
                || secret
                    .hosts
                    .iter()
                    .filter_map(|h| HostRule::parse(h))
                    .any(|r| r.matches(&host, port))
        };
        // An API key in the query string (`?api_key={{secret:KEY}}`).
        if let Some(query) = request.uri().query()
            && has_placeholder(query)
        {
            // Only to a host the secret names: a secret bound to no host may go in a
            // header to every allowed host, not into URLs, which servers log.
            let filled = substitute_secrets_in_query(query, &self.secrets, |secret| {
                !secret.hosts.is_empty() && bound_here(secret)
            })
            .map_err(|reason| self.deny(format!("{reason} ({host}:{port})")))?;
            let mut parts = request.uri().clone().into_parts();
            let path = parts
                .path_and_query
                .as_ref()
                .map_or("/", |p| p.path())
                .to_owned();
            parts.path_and_query = Some(
                format!("{path}?{filled}")
                    .parse()
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?,
            );
            *request.uri_mut() =
                http::Uri::from_parts(parts).map_err(|_| HttpError::HttpRequestUriInvalid)?;
        }
        for value in request.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if !has_placeholder(text) {
                continue;
            }
            let filled = substitute_secrets(text, &self.secrets, bound_here)
                .map_err(|reason| self.deny(format!("{reason} ({host}:{port})")))?;
            let mut filled = HeaderValue::from_str(&filled)
                .map_err(|_| HttpError::HttpRequestHeaderSectionSize(None))?;
            filled.set_sensitive(true);
            *value = filled;
        }
        Ok((host, port))
    }

    /// Resolves the host once and returns the address to connect to, after checking
    /// every address the name resolves to.
    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, HttpError> {
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| HttpError::DnsError {
                    rcode: None,
                    info_code: None,
                })?
                .map(|a| a.ip())
                .collect(),
        };
        if !self.allow_private && addresses.iter().any(|ip| is_private(*ip)) {
            self.deny(format!(
                "{host} resolves to a loopback or private address (or another non-global one), which system `{}` does not allow",
                self.system
            ));
            return Err(HttpError::DestinationIpProhibited);
        }
        addresses
            .first()
            .map(|ip| SocketAddr::new(*ip, port))
            .ok_or(HttpError::DnsError {
                rcode: None,
                info_code: None,
            })
    }

    async fn send(
        self,
        mut request: http::Request<WasiBody>,
        (host, port): (String, u16),
    ) -> Result<http::Response<WasiBody>, HttpError> {
        // Wait for a free slot; the call's deadline bounds the wait.
        let _slot = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HttpError::HttpRequestDenied)?;
        let address = self.resolve(&host, port).await?;
        if let Some(length) = request.headers().get(http::header::CONTENT_LENGTH)
            && length
                .to_str()
                .ok()
                .and_then(|l| l.parse::<u64>().ok())
                .is_some_and(|l| l > self.max_request)
        {
            return Err(HttpError::HttpRequestBodySize(Some(self.max_request)));
        }
        // The body is read whole (within its cap) and sent with a Content-Length.
        let max_request = self.max_request;
        let body = Limited::new(std::mem::take(request.body_mut()), max_request as usize)
            .collect()
            .await
            .map_err(|e| size_or_inner(e, HttpError::HttpRequestBodySize(Some(max_request))))?
            .to_bytes();
        // wasi-http has set `Host` from the URI's authority (the guest may not set it, nor
        // `Transfer-Encoding`); the request line carries only the path.
        let tls = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()))
            .build()
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        // A compressed answer could carry a secret past the scrubbing below: a system
        // with secrets gets answers as they are.
        if !self.secret_forms.is_empty() {
            request.headers_mut().remove(http::header::ACCEPT_ENCODING);
        }
        let length = body.len();
        let mut request = request.map(|_| Full::new(body));
        if length > 0 || request.method() != http::Method::GET {
            request
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        }

        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(HttpError::Connect)?;
            let stream: Box<dyn IoStream> = if tls {
                let connector = tokio_rustls::TlsConnector::from(tls_config());
                let name = match host.parse::<IpAddr>() {
                    Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                    Err(_) => rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|_| HttpError::HttpRequestUriInvalid)?,
                };
                Box::new(
                    connector
                        .connect(name, stream)
                        .await
                        .map_err(HttpError::Tls)?,
                )
            } else {
                Box::new(stream)
            };
            let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
                .handshake(wasmtime_wasi_http::io::TokioIo::new(stream))
                .await?;
            let driver = tokio::spawn(connection);
            let response = sender.send_request(request).await?;
            let (parts, incoming) = response.into_parts();
            if let Some(length) = parts.headers.get(http::header::CONTENT_LENGTH)
                && length
                    .to_str()
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok())
                    .is_some_and(|l| l > self.max_response)
            {
                driver.abort();
                return Err(HttpError::HttpResponseBodySize(Some(self.max_response)));
            }
            let body = Limited::new(incoming, self.max_response as usize)
                .collect()
                .await
                .map_err(|e| {
                    size_or_inner(e, HttpError::HttpResponseBodySize(Some(self.max_response)))
                })?
                .to_bytes();
            drop(sender);
            driver.abort();
            Ok((parts, body))
        };
        let (mut parts, body) = tokio::time::timeout(remaining, exchange)
            .await
            .map_err(|_| HttpError::ConnectionTimeout)??;

        // A response must not hand a secret back to the plugin, in any form.
        let mut body = body.to_vec();
        if !self.secret_forms.is_empty() {
            if parts
                .headers
                .get(http::header::CONTENT_ENCODING)
                .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
            {
                self.deny(format!(
                    "{host} answered with an encoded (compressed) body, which oubli cannot check for the secrets of system `{}`",
                    self.system
                ));
                return Err(HttpError::HttpResponseContentCoding(None));
            }
            for value in parts.headers.values_mut() {
                let mut bytes = value.as_bytes().to_vec();
                if self.secret_forms.scrub(&mut bytes) {
                    *value = HeaderValue::from_bytes(&bytes)
                        .unwrap_or(HeaderValue::from_static("[redacted by oubli]"));
                }
            }
            if self.secret_forms.scrub(&mut body) {
                tracing::warn!(system = %self.system, "a response carried a secret of the system; it was removed before the plugin saw it");
                parts.headers.remove(http::header::CONTENT_LENGTH);
            }
        }
        let body = Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync();
        Ok(http::Response::from_parts(parts, body))
    }
}

/// The TLS client configuration (the Web PKI's roots), made once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}

fn size_or_inner(error: Box<dyn std::error::Error + Send + Sync>, size: HttpError) -> HttpError {
    match error.downcast::<HttpError>() {
        Ok(inner) => *inner,
        Err(_) => size,
    }
}

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        drop((fut, options));
        let checked = self.prepare(&mut request);
        let policy = self.clone();
        Box::new(async move {
            let destination = checked?;
            let response = policy.send(request, destination).await?;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_host_and_port() {
        let exact = HostRule::parse("api.example.org").unwrap();
        assert!(exact.matches("api.example.org", 443));
        assert!(!exact.matches("evil.example.org", 443));
        let wildcard = HostRule::parse("*.example.org").unwrap();
        assert!(wildcard.matches("api.example.org", 80));
        assert!(!wildcard.matches("example.org", 80));
        assert!(!wildcard.matches("badexample.org", 80));
        let port = HostRule::parse("127.0.0.1:8080").unwrap();
        assert!(port.matches("127.0.0.1", 8080));
        assert!(!port.matches("127.0.0.1", 8081));
        assert!(HostRule::parse("[::1]:80").unwrap().matches("::1", 80));
        assert!(HostRule::parse("bad host").is_none());
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001::1",
            "2001:db8::1",
            "fec0::1",
            "ff02::1",
            "224.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
