//! The `http` capability: `wasi:http/outgoing-handler` restricted to a system's
//! allow-list, with loopback and private addresses refused unless allowed, size caps on
//! both bodies, and `{{secret:NAME}}` placeholders filled in on the way out.
//!
//! The host does not follow redirects: the guest sees the 3xx and sends a new request,
//! which passes through the same checks, so every hop is checked.

use super::system::{
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES, PreparedSystem, Secret,
    substitute_secrets,
};
use http::HeaderValue;
use http_body_util::{BodyExt, Limited};
use std::collections::BTreeMap;
use std::net::IpAddr;
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

/// Whether an address is loopback, private, link-local or otherwise not on the public
/// internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
        }
    }
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
    secrets: Arc<BTreeMap<String, Secret>>,
    deadline: Instant,
    /// The first refusal of this call, so that a failed call reports why.
    pub denied: Arc<Mutex<Option<String>>>,
}

impl HttpPolicy {
    pub fn new(
        system: &PreparedSystem,
        deadline: Instant,
        denied: Arc<Mutex<Option<String>>>,
    ) -> Self {
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
            secrets: Arc::new(system.secrets.clone()),
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
        for value in request.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if !text.contains("{{secret:") {
                continue;
            }
            let filled = substitute_secrets(text, &self.secrets, |secret| {
                secret.hosts.is_empty()
                    || secret
                        .hosts
                        .iter()
                        .filter_map(|h| HostRule::parse(h))
                        .any(|r| r.matches(&host, port))
            })
            .map_err(|reason| self.deny(format!("{reason} ({host}:{port})")))?;
            let mut filled = HeaderValue::from_str(&filled)
                .map_err(|_| HttpError::HttpRequestHeaderSectionSize(None))?;
            filled.set_sensitive(true);
            *value = filled;
        }
        Ok((host, port))
    }

    async fn send(
        self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        (host, port): (String, u16),
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
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
                "{host} resolves to a loopback or private address, which system `{}` does not allow",
                self.system
            ));
            return Err(HttpError::DestinationIpProhibited);
        }
        if let Some(length) = request.headers().get(http::header::CONTENT_LENGTH)
            && length
                .to_str()
                .ok()
                .and_then(|l| l.parse::<u64>().ok())
                .is_some_and(|l| l > self.max_request)
        {
            return Err(HttpError::HttpRequestBodySize(Some(self.max_request)));
        }
        let max_request = self.max_request;
        let request = request.map(move |body| {
            Limited::new(body, max_request as usize)
                .map_err(move |e| {
                    size_or_inner(e, HttpError::HttpRequestBodySize(Some(max_request)))
                })
                .boxed_unsync()
        });
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let mut options = options.unwrap_or_default();
        for timeout in [
            &mut options.connect_timeout,
            &mut options.first_byte_timeout,
            &mut options.between_bytes_timeout,
        ] {
            *timeout = Some(timeout.map_or(remaining, |t| t.min(remaining)));
        }
        let (response, io) =
            wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
        tokio::spawn(async move {
            if let Err(e) = io.await {
                tracing::debug!(error = ?e, "plugin HTTP connection ended with an error");
            }
        });
        let (mut parts, body) = response.into_parts();
        if let Some(length) = parts.headers.get(http::header::CONTENT_LENGTH)
            && length
                .to_str()
                .ok()
                .and_then(|l| l.parse::<u64>().ok())
                .is_some_and(|l| l > self.max_response)
        {
            return Err(HttpError::HttpResponseBodySize(Some(self.max_response)));
        }
        // A response must not hand a secret back to the plugin.
        for value in parts.headers.values_mut() {
            if let Ok(text) = value.to_str()
                && self.secrets.values().any(|s| text.contains(&s.value))
            {
                *value = HeaderValue::from_static("[redacted by oubli]");
            }
        }
        let max_response = self.max_response;
        let body = Limited::new(body, max_response as usize)
            .map_err(move |e| size_or_inner(e, HttpError::HttpResponseBodySize(Some(max_response))))
            .boxed_unsync();
        Ok(http::Response::from_parts(parts, body))
    }
}

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
        drop(fut);
        let checked = self.prepare(&mut request);
        let policy = self.clone();
        Box::new(async move {
            let destination = checked?;
            let response = policy.send(request, options, destination).await?;
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
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
