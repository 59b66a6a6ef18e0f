//! What the pages for people share: the layout (maud), the language (French or English,
//! from a `?lang=` switch, its cookie, then `Accept-Language`), the security headers
//! every page carries, and the CSRF check of every form (a random value in an HttpOnly,
//! SameSite=Strict cookie that the form repeats in a hidden field).

use crate::app::App;
pub use crate::evidence::certificate_html::Lang;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rand::RngCore;
use std::collections::HashMap;

/// The cookie that carries the form's CSRF value.
pub const CSRF_COOKIE: &str = "oubli_csrf";
/// The cookie that remembers the language chosen with the switch.
const LANG_COOKIE: &str = "oubli_lang";

/// A path as logs and traces may show it: the token of an approval link or of a
/// recipient's notice is left out.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    for secret in ["/approve/", "/v1/notices/"] {
        if path.starts_with(secret) {
            return format!("{secret}…").into();
        }
    }
    path.into()
}

/// A cookie's name: `__Host-` before it when the service is reached over HTTPS, so that
/// no other host of the same site can set it.
pub fn cookie_name(app: &App, base: &str) -> String {
    if secure(app) {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// The text in the page's language.
pub fn t(lang: Lang, en: &'static str, fr: &'static str) -> &'static str {
    match lang {
        Lang::En => en,
        Lang::Fr => fr,
    }
}

/// The value of a cookie of the request.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The page's language: `?lang=`, else the switch's cookie, else the first of French or
/// English in `Accept-Language`, else English.
pub fn lang(headers: &HeaderMap, query: &HashMap<String, String>) -> Lang {
    let named = |v: &str| match v.trim().get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("fr") => Some(Lang::Fr),
        Some("en") => Some(Lang::En),
        _ => None,
    };
    if let Some(lang) = query.get("lang").and_then(|v| named(v)) {
        return lang;
    }
    if let Some(lang) = cookie(headers, LANG_COOKIE).and_then(named) {
        return lang;
    }
    let accepted = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut best: Option<(f32, Lang)> = None;
    for part in accepted.split(',') {
        let mut pieces = part.split(';');
        let Some(lang) = pieces.next().and_then(named) else {
            continue;
        };
        let q = pieces
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::En, |(_, lang)| lang)
}

fn code(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "en",
        Lang::Fr => "fr",
    }
}

/// Whether cookies must be `Secure`: the service is reached over HTTPS.
pub fn secure(app: &App) -> bool {
    app.config.base_url().starts_with("https://")
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the whole site.
pub fn set_cookie(app: &App, name: &str, value: &str, max_age_secs: Option<u64>) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age_secs {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure(app) {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("cookie values are base64url")
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The form's CSRF value: the request's cookie, or a new one, with the `Set-Cookie` to
/// send when it is new.
pub fn csrf(app: &App, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let name = cookie_name(app, CSRF_COOKIE);
    match cookie(headers, &name).filter(|v| v.len() == 43) {
        Some(value) => (value.to_owned(), None),
        None => {
            let value = random_token();
            let set = set_cookie(app, &name, &value, None);
            (value, Some(set))
        }
    }
}

/// Whether a posted form repeats the CSRF cookie (compared in constant time).
pub fn csrf_ok(app: &App, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let name = cookie_name(app, CSRF_COOKIE);
    let (Some(cookie), Some(field)) = (cookie(headers, &name), form.get("csrf")) else {
        return false;
    };
    cookie.len() == 43
        && cookie.len() == field.len()
        && cookie
            .bytes()
            .zip(field.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The hidden field that carries the CSRF value.
pub fn csrf_field(value: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(value); }
}

/// A whole page: the layout around `body`, with the language switch back to `path`.
pub fn page(lang: Lang, title: &str, path: &str, nav: Option<Markup>, body: Markup) -> Markup {
    let other = match lang {
        Lang::En => (Lang::Fr, "Français"),
        Lang::Fr => (Lang::En, "English"),
    };
    let separator = if path.contains('?') { '&' } else { '?' };
    html! {
        (DOCTYPE)
        html lang=(code(lang)) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · oubli" }
                link rel="stylesheet" href="/assets/oubli.css";
            }
            body {
                header.top {
                    a.brand href="/console" { "oubli" }
                    @if let Some(nav) = nav { nav aria-label=(t(lang, "Main", "Principal")) { (nav) } }
                    a.lang href={ (path) (separator) "lang=" (code(other.0)) } lang=(code(other.0)) hreflang=(code(other.0)) { (other.1) }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// An HTML answer with the language cookie set when the page was asked for with
/// `?lang=`, and any other cookies given.
pub fn respond(
    app: &App,
    status: StatusCode,
    query: &HashMap<String, String>,
    lang: Lang,
    cookies: impl IntoIterator<Item = HeaderValue>,
    markup: Markup,
) -> Response {
    let mut response = (status, Html(markup.into_string())).into_response();
    let headers = response.headers_mut();
    if query.contains_key("lang") {
        headers.append(
            header::SET_COOKIE,
            set_cookie(app, LANG_COOKIE, code(lang), Some(365 * 86_400)),
        );
    }
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// A page that says what went wrong, with a link back.
pub fn problem(
    app: &App,
    lang: Lang,
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<(&str, &str)>,
) -> Response {
    let body = html! {
        h1 { (title) }
        p role="alert" { (message) }
        @if let Some((href, label)) = back { p { a href=(href) { (label) } } }
    };
    respond(
        app,
        status,
        &HashMap::new(),
        lang,
        [],
        page(lang, title, "/console", None, body),
    )
}

/// A date and time as the pages show it (as the e-mails do).
pub fn when(at: &chrono::DateTime<chrono::Utc>) -> String {
    when_ms(at.timestamp_millis())
}

/// [`when`] of a time in milliseconds since the epoch.
pub fn when_ms(ms: i64) -> String {
    crate::notify::email::day(ms)
}

/// A request status in the page's language.
pub fn status_label(lang: Lang, status: &str) -> &'static str {
    match status {
        "received" => t(lang, "received", "reçue"),
        "awaiting_controller" => t(lang, "awaiting the controller", "en attente du responsable"),
        "approved" => t(lang, "approved", "approuvée"),
        "running" => t(lang, "running", "en cours"),
        "completed" => t(lang, "completed", "terminée"),
        "failed" => t(lang, "failed", "en échec"),
        "rejected" => t(lang, "rejected", "rejetée"),
        "cancelled" => t(lang, "cancelled", "annulée"),
        "queued" => t(lang, "queued", "en file"),
        "succeeded" => t(lang, "succeeded", "réussie"),
        _ => t(lang, "other", "autre"),
    }
}

/// A request kind in the page's language.
pub fn kind_label(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "access" => t(lang, "access", "accès"),
        "rectification" => t(lang, "rectification", "rectification"),
        "objection" => t(lang, "objection", "opposition"),
        _ => t(lang, "erasure", "effacement"),
    }
}

/// The headers every answer carries, pages and JSON alike: no script at all, no framing,
/// no sniffing, no referrer, and no caching of what may hold personal data.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The style sheet of the pages: readable on a phone, visible focus, due dates that
/// stand out.
pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PreEscaped(STYLE).into_string(),
    )
        .into_response()
}

const STYLE: &str = r#"
:root { --ink: #1d232a; --muted: #56606b; --line: #d6dbe0; --accent: #1f5fa8; --warn: #9a5b00; --bad: #a3231f; --good: #1f7a3a; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #f6f7f9; }
header.top { display: flex; flex-wrap: wrap; gap: .75rem 1.25rem; align-items: center; padding: .75rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
header.top nav { display: flex; flex-wrap: wrap; gap: .25rem 1rem; flex: 1; }
.brand { font-weight: 700; color: var(--ink); text-decoration: none; }
.lang { margin-left: auto; }
main { max-width: 70rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus, textarea:focus { outline: 3px solid #f0b400; outline-offset: 2px; }
table { width: 100%; border-collapse: collapse; background: #fff; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
.scroll { overflow-x: auto; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; background: #fff; padding: .75rem; border: 1px solid var(--line); }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
form.inline { display: inline; }
fieldset { border: 1px solid var(--line); background: #fff; margin: 0 0 1rem; padding: .75rem; }
label { display: block; font-weight: 600; margin: .25rem 0; }
input[type=text], input[type=password], select, textarea { width: 100%; max-width: 32rem; padding: .45rem; font: inherit; border: 1px solid #8a949e; border-radius: 4px; }
textarea { min-height: 5rem; }
button { font: inherit; padding: .5rem 1rem; border-radius: 4px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; margin: .25rem .5rem .25rem 0; }
button.secondary { background: #fff; color: var(--accent); }
button.danger { background: var(--bad); border-color: var(--bad); }
.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; }
.filters label { font-weight: 400; }
.due-soon { color: var(--warn); font-weight: 700; }
.overdue { color: var(--bad); font-weight: 700; }
.status-completed { color: var(--good); }
.status-failed, .status-rejected { color: var(--bad); }
.notice { background: #fff; border-left: 4px solid var(--accent); padding: .75rem 1rem; margin: 0 0 1rem; }
.notice.bad { border-color: var(--bad); }
.muted { color: var(--muted); }
code { overflow-wrap: anywhere; }
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn link_tokens_are_left_out_of_logged_paths() {
        assert_eq!(super::loggable_path("/approve/lnk_1.abc"), "/approve/…");
        assert_eq!(
            super::loggable_path("/v1/notices/msg_1.abc"),
            "/v1/notices/…"
        );
        assert_eq!(super::loggable_path("/v1/requests/1"), "/v1/requests/1");
    }
}
