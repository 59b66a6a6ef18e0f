//! The console under `/console`: a person signs in with a token (exchanged for an
//! HttpOnly, SameSite=Strict session cookie, Secure behind HTTPS), lists and follows
//! requests, takes the steps their role allows, and downloads the evidence. Every page
//! and action calls the API's own handler with the session's caller, so the console can
//! do exactly what the API lets that token do, with the same checks and audit events.

use super::pages::{self, Lang, t};
use super::requests::{self as api, Extension, Reason};
use super::{ApiError, Json, OptionalJson, Page};
use crate::app::App;
use crate::auth::{self, Caller, Role};
use crate::controller::PluginStatus;
use crate::request::Status;
use crate::request::rows::Request;
use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use std::collections::HashMap;
use std::sync::Arc;

/// The cookie that carries a console session.
const SESSION_COOKIE: &str = "oubli_session";

type Params = HashMap<String, String>;

/// The client's address ([`super::client_ip`]).
pub struct ClientIp(std::net::IpAddr);

impl FromRequestParts<Arc<App>> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(super::client_ip(
            parts,
            &app.config.trusted_proxies,
        )))
    }
}

/// A console page's visitor: the signed-in caller and the page's language. Without a
/// live session the page answers with the way to the sign-in page.
pub struct SignedIn {
    caller: Caller,
    lang: Lang,
}

impl FromRequestParts<Arc<App>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let query: Params = Query::try_from_uri(&parts.uri)
            .map(|Query(q)| q)
            .unwrap_or_default();
        let lang = pages::lang(&parts.headers, &query);
        let caller = signed_in(app, &parts.headers).await?;
        Ok(SignedIn { caller, lang })
    }
}

/// The signed-in caller, or the way to the sign-in page.
async fn signed_in(app: &App, headers: &HeaderMap) -> Result<Caller, Response> {
    let to_sign_in = || Redirect::to("/console/sign-in").into_response();
    let Some(secret) = pages::cookie(headers, &pages::cookie_name(app, SESSION_COOKIE)) else {
        return Err(to_sign_in());
    };
    match auth::session_caller(&app.store, secret).await {
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(to_sign_in()),
        Err(e) => Err(failed(app, Lang::En, ApiError::from(e))),
    }
}

/// The page of an API error.
fn failed(app: &App, lang: Lang, error: ApiError) -> Response {
    let status = error.status();
    if status.is_server_error() {
        tracing::error!(error = format!("{error:#}"), "a console page failed");
    }
    let message = if status.is_server_error() {
        t(
            lang,
            "oubli could not do this now; try again in a moment.",
            "oubli n'a pas pu le faire ; réessayez dans un instant.",
        )
        .to_owned()
    } else {
        error.to_string()
    };
    pages::problem(
        app,
        lang,
        status,
        t(lang, "This could not be done", "Impossible de le faire"),
        &message,
        Some((
            "/console",
            t(lang, "Back to the requests", "Retour aux demandes"),
        )),
    )
}

/// The links at the top of every console page, by role.
fn nav(lang: Lang, caller: &Caller, csrf: &str) -> Markup {
    html! {
        a href="/console" { (t(lang, "Requests", "Demandes")) }
        @if matches!(caller.role, Role::Admin | Role::Auditor) {
            a href="/console/audit" { (t(lang, "Audit trail", "Journal d'audit")) }
        }
        @if caller.role == Role::Admin {
            a href="/console/admin" { (t(lang, "Administration", "Administration")) }
        }
        form.inline method="post" action="/console/sign-out" {
            (pages::csrf_field(csrf))
            button.secondary type="submit" { (t(lang, "Sign out", "Se déconnecter")) }
        }
    }
}

/// A console page for a signed-in caller.
/// What every console page is made from.
struct Ctx<'a> {
    app: &'a App,
    lang: Lang,
    query: &'a Params,
    headers: &'a HeaderMap,
}

fn console_page(
    ctx: Ctx<'_>,
    caller: &Caller,
    title: &str,
    path: &str,
    body: impl FnOnce(&str) -> Markup,
) -> Response {
    let Ctx {
        app,
        lang,
        query,
        headers,
    } = ctx;
    let (csrf, set) = pages::csrf(app, headers);
    let markup = pages::page(
        lang,
        title,
        path,
        Some(nav(lang, caller, &csrf)),
        body(&csrf),
    );
    pages::respond(app, StatusCode::OK, query, lang, set, markup)
}

/// `GET /` and `GET /console/`: to the console.
pub async fn home() -> Redirect {
    Redirect::to("/console")
}

/// The sign-in page.
pub async fn sign_in_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Response {
    let lang = pages::lang(&headers, &query);
    sign_in_form(&app, &headers, &query, lang, StatusCode::OK, None)
}

fn sign_in_form(
    app: &App,
    headers: &HeaderMap,
    query: &Params,
    lang: Lang,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let (csrf, set) = pages::csrf(app, headers);
    let body = html! {
        h1 { (t(lang, "Sign in to oubli", "Connexion à oubli")) }
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        form method="post" action="/console/sign-in" {
            (pages::csrf_field(&csrf))
            label for="token" { (t(lang, "Your access token", "Votre jeton d'accès")) }
            input type="password" id="token" name="token" required autocomplete="current-password";
            p.muted { (t(lang,
                "The token your administrator gave you (DPO, auditor or admin). It is exchanged for a session that ends when you sign out or after a few hours.",
                "Le jeton remis par votre administrateur (DPO, auditeur ou administrateur). Il est échangé contre une session qui se termine à la déconnexion ou après quelques heures.")) }
            button type="submit" id="sign-in" { (t(lang, "Sign in", "Se connecter")) }
        }
    };
    pages::respond(
        app,
        status,
        query,
        lang,
        set,
        pages::page(
            lang,
            t(lang, "Sign in", "Connexion"),
            "/console/sign-in",
            None,
            body,
        ),
    )
}

/// Exchanges a token for a session cookie.
pub async fn sign_in(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Query(query): Query<Params>,
    Form(form): Form<Params>,
) -> Response {
    let lang = pages::lang(&headers, &query);
    if !pages::csrf_ok(&app, &headers, &form) {
        return sign_in_form(
            &app,
            &headers,
            &query,
            lang,
            StatusCode::FORBIDDEN,
            Some(t(
                lang,
                "The form had expired; sign in again.",
                "Le formulaire avait expiré ; reconnectez-vous.",
            )),
        );
    }
    if app.console_throttle.blocked(ip).is_some() {
        return sign_in_form(
            &app,
            &headers,
            &query,
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            Some(t(
                lang,
                "Too many failed sign-ins from this address; wait a moment.",
                "Trop d'échecs de connexion depuis cette adresse ; patientez un instant.",
            )),
        );
    }
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let caller = match auth::authenticate(&app.store, token).await {
        Ok(Some(caller)) if !token.is_empty() => caller,
        Ok(_) => {
            app.console_throttle.fail(ip);
            return sign_in_form(
                &app,
                &headers,
                &query,
                lang,
                StatusCode::UNAUTHORIZED,
                Some(t(
                    lang,
                    "This token is not valid (or was revoked).",
                    "Ce jeton n'est pas valide (ou a été révoqué).",
                )),
            );
        }
        Err(e) => return failed(&app, lang, e.into()),
    };
    let secret = match auth::open_session(
        &app.store,
        &caller.token_id,
        app.config.console_session_hours,
    )
    .await
    {
        Ok(secret) => secret,
        Err(e) => return failed(&app, lang, e.into()),
    };
    let audited = async {
        let mut tx = app.store.begin().await?;
        crate::audit::append(
            &mut tx,
            &caller.actor(),
            "console.signed_in",
            None,
            serde_json::json!({}),
        );
        tx.commit().await?;
        anyhow::Ok(())
    };
    if let Err(e) = audited.await {
        return failed(&app, lang, ApiError::Internal(e));
    }
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        pages::set_cookie(
            &app,
            &pages::cookie_name(&app, SESSION_COOKIE),
            &secret,
            Some(app.config.console_session_hours * 3_600),
        ),
    );
    response
}

/// Ends the session.
pub async fn sign_out(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    // Signing out ends the session whatever the form carries: ending one is never harmful.
    let _ = form;
    if let Some(secret) = pages::cookie(&headers, &pages::cookie_name(&app, SESSION_COOKIE))
        && let Err(e) = auth::close_session(&app.store, secret).await
    {
        return failed(&app, Lang::En, e.into());
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        pages::set_cookie(&app, &pages::cookie_name(&app, SESSION_COOKIE), "", Some(0)),
    );
    response
}

/// The query of the next page: the same filters, from `next` on.
fn next_page(filters: &Params, next: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut names: Vec<&String> = filters.keys().filter(|k| *k != "after").collect();
    names.sort();
    for name in names {
        query.append_pair(name, &filters[name]);
    }
    query.append_pair("after", next);
    query.finish()
}

/// How close a due date is: `overdue`, `due-soon` (within a week) or nothing.
fn due_class(request: &Request) -> Option<&'static str> {
    if request.overdue {
        Some("overdue")
    } else if !request.status.is_final()
        && request.due_at - chrono::Utc::now() < chrono::Duration::days(7)
    {
        Some("due-soon")
    } else {
        None
    }
}

/// The requests, with filters.
pub async fn list(
    State(app): State<Arc<App>>,
    SignedIn { caller, lang }: SignedIn,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Response {
    // The API's filters, as the form sends them (empty means any).
    let filters: Params = query
        .iter()
        .filter(|(k, v)| {
            ["status", "kind", "controller_id", "overdue", "after"].contains(&k.as_str())
                && !v.is_empty()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let page = match api::list(State(app.clone()), caller.clone(), Query(filters.clone())).await {
        Ok(Json(page)) => page,
        Err(e) => return failed(&app, lang, e),
    };
    let controllers = crate::controller::list_controllers(&app.store)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| caller.sees(&c.id))
        .collect::<Vec<_>>();
    let selected = |name: &str, value: &str| filters.get(name).is_some_and(|v| v == value);
    let statuses = [
        "received",
        "awaiting_controller",
        "approved",
        "running",
        "completed",
        "failed",
        "rejected",
        "cancelled",
    ];
    console_page(
        Ctx {
            app: &app,
            lang,
            query: &query,
            headers: &headers,
        },
        &caller,
        t(lang, "Requests", "Demandes"),
        "/console",
        |_| {
            html! {
                h1 { (t(lang, "Requests", "Demandes")) }
                form.filters method="get" action="/console" role="search" {
                    div { label for="status" { (t(lang, "Status", "Statut")) }
                        select id="status" name="status" {
                            option value="" { (t(lang, "any", "tous")) }
                            @for s in statuses { option value=(s) selected[selected("status", s)] { (pages::status_label(lang, s)) } }
                        } }
                    div { label for="kind" { (t(lang, "Kind", "Type")) }
                        select id="kind" name="kind" {
                            option value="" { (t(lang, "any", "tous")) }
                            @for k in ["access", "rectification", "erasure", "objection"] { option value=(k) selected[selected("kind", k)] { (pages::kind_label(lang, k)) } }
                        } }
                    div { label for="controller_id" { (t(lang, "Controller", "Responsable")) }
                        select id="controller_id" name="controller_id" {
                            option value="" { (t(lang, "any", "tous")) }
                            @for c in &controllers { option value=(c.id) selected[selected("controller_id", &c.id)] { (c.name) } }
                        } }
                    div { label for="overdue" { (t(lang, "Overdue", "En retard")) }
                        select id="overdue" name="overdue" {
                            option value="" { (t(lang, "any", "toutes")) }
                            option value="true" selected[selected("overdue", "true")] { (t(lang, "overdue only", "en retard seulement")) }
                            option value="false" selected[selected("overdue", "false")] { (t(lang, "not overdue", "dans les délais")) }
                        } }
                    div { button type="submit" { (t(lang, "Filter", "Filtrer")) } }
                }
                @if page.items.is_empty() {
                    p { (t(lang, "No request matches.", "Aucune demande ne correspond.")) }
                } @else {
                    div.scroll { table {
                        caption.muted { (t(lang, "Oldest first; due dates within a week or past stand out.", "Les plus anciennes d'abord ; les échéances à moins d'une semaine ou dépassées ressortent.")) }
                        thead { tr {
                            th scope="col" { (t(lang, "Request", "Demande")) }
                            th scope="col" { (t(lang, "Kind", "Type")) }
                            th scope="col" { (t(lang, "Status", "Statut")) }
                            th scope="col" { (t(lang, "Received", "Reçue le")) }
                            th scope="col" { (t(lang, "Due", "Échéance")) }
                        } }
                        tbody { @for r in &page.items { tr {
                            td { a href={ "/console/requests/" (r.id) } { (r.external_ref.as_deref().unwrap_or(&r.id)) } }
                            td { (pages::kind_label(lang, r.kind.as_str())) }
                            td class={ "status-" (r.status.as_str()) } { (pages::status_label(lang, r.status.as_str())) }
                            td { (pages::when(&r.received_at)) }
                            td class=[due_class(r)] {
                                (pages::when(&r.due_at))
                                @match due_class(r) {
                                    Some("overdue") => { " (" (t(lang, "overdue", "en retard")) ")" }
                                    Some(_) => { " (" (t(lang, "due soon", "bientôt dû")) ")" }
                                    None => {}
                                }
                            }
                        } } }
                    } }
                    @if let Some(next) = &page.next {
                        p { a href={ "/console?" (next_page(&filters, next)) } { (t(lang, "Next page", "Page suivante")) } }
                    }
                }
            }
        },
    )
}

/// One request: what it asks, its tasks, its timeline, its e-mails, the steps the role
/// allows, and its evidence.
pub async fn request(
    State(app): State<Arc<App>>,
    SignedIn { caller, lang }: SignedIn,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Params>,
) -> Response {
    let request = match api::get_one(State(app.clone()), caller.clone(), Path(id.clone())).await {
        Ok(Json(request)) => request,
        Err(e) => return failed(&app, lang, e),
    };
    let tasks = match api::tasks(State(app.clone()), caller.clone(), Path(id.clone())).await {
        Ok(Json(page)) => page.items,
        Err(e) => return failed(&app, lang, e),
    };
    let events = match api::events(State(app.clone()), caller.clone(), Path(id.clone())).await {
        Ok(Json(page)) => page.items,
        Err(e) => return failed(&app, lang, e),
    };
    let emails = crate::notify::email::list(&app.store, &id)
        .await
        .unwrap_or_default();
    let systems: Vec<String> = tasks.iter().map(|t| t.system_name.clone()).collect();
    let by = match super::approval::filed_by(&app, &id).await {
        Ok(by) => by,
        Err(e) => return failed(&app, lang, ApiError::Internal(e)),
    };
    let path = format!("/console/requests/{id}");
    let dpo = matches!(caller.role, Role::Dpo | Role::Admin);
    let decides = matches!(caller.role, Role::Controller | Role::Admin);
    let status = request.status;
    let done = status == Status::Completed;
    let title = request.external_ref.clone().unwrap_or_else(|| id.clone());
    console_page(
        Ctx {
            app: &app,
            lang,
            query: &query,
            headers: &headers,
        },
        &caller,
        &title,
        &path,
        |csrf| {
            html! {
                h1 { (t(lang, "Request", "Demande")) " " (title) }
                @if let Some(detail) = &request.status_detail { p.notice role="status" { (detail) } }
                (super::approval::summary(lang, &request, if by.is_empty() { "—" } else { by.as_str() }, &systems, true))
                @if let Some(reason) = &request.decision_reason {
                    p { strong { (t(lang, "Reason given by the controller:", "Motif donné par le responsable :")) } " " (reason) }
                }
                @if let Some(reason) = &request.extension_reason {
                    p { strong { (t(lang, "Deadline extended:", "Délai prolongé :")) } " " (reason) }
                }

                h2 { (t(lang, "Evidence", "Preuves")) }
                @if done && request.kind.as_str() == "erasure" {
                    ul {
                        li { a href={ (path) "/certificate.html?lang=" (if lang == Lang::Fr { "fr" } else { "en" }) } id="certificate-page" { (t(lang, "Erasure certificate (printable page)", "Certificat d'effacement (page imprimable)")) } }
                        li { a href={ (path) "/certificate.json" } { (t(lang, "Erasure certificate (signed JSON)", "Certificat d'effacement (JSON signé)")) } }
                    }
                } @else if done && request.kind.as_str() == "access" {
                    ul {
                        li { a href={ (path) "/package.html" } { (t(lang, "Access package (page for the person)", "Dossier d'accès (page pour la personne)")) } }
                        li { a href={ (path) "/package.json" } { (t(lang, "Access package (JSON)", "Dossier d'accès (JSON)")) } }
                    }
                } @else if request.kind.as_str() == "objection" {
                    p.muted { (t(lang, "An objection leaves no certificate: its approval, and the entries it put on the suppression list, are in the audit trail.", "Une opposition ne donne pas de certificat : son approbation et les inscriptions sur la liste d'opposition figurent dans le journal d'audit.")) }
                } @else {
                    p.muted { (t(lang, "The evidence is ready once the request has completed.", "Les preuves sont prêtes une fois la demande terminée.")) }
                }

                @if (dpo && matches!(status, Status::Received | Status::AwaitingController | Status::Approved | Status::Failed))
                    || (decides && status == Status::AwaitingController) {
                    h2 { (t(lang, "Steps", "Actions")) }
                }
                @if decides && status == Status::AwaitingController {
                    form method="post" action={ (path) "/approve" } {
                        (pages::csrf_field(csrf))
                        button type="submit" { (t(lang, "Approve", "Approuver")) }
                    }
                    form method="post" action={ (path) "/reject" } {
                        (pages::csrf_field(csrf))
                        fieldset { legend { (t(lang, "Reject", "Rejeter")) }
                            label for="reject-reason" { (t(lang, "Reason", "Motif")) }
                            textarea id="reject-reason" name="reason" required {}
                            button.danger type="submit" { (t(lang, "Reject", "Rejeter")) } }
                    }
                }
                @if dpo && status == Status::Failed {
                    form method="post" action={ (path) "/retry" } {
                        (pages::csrf_field(csrf))
                        button type="submit" id="retry" { (t(lang, "Retry the failed systems", "Relancer les systèmes en échec")) }
                    }
                }
                @if dpo && !status.is_final() {
                    form method="post" action={ (path) "/extend" } {
                        (pages::csrf_field(csrf))
                        fieldset { legend { (t(lang, "Extend the deadline (Art. 12(3))", "Prolonger le délai (art. 12(3))")) }
                            label for="months" { (t(lang, "By", "De")) }
                            select id="months" name="months" {
                                option value="1" { (t(lang, "1 month", "1 mois")) }
                                option value="2" { (t(lang, "2 months", "2 mois")) }
                            }
                            label for="extend-reason" { (t(lang, "Reason (told to the person)", "Motif (communiqué à la personne)")) }
                            textarea id="extend-reason" name="reason" required {}
                            button.secondary type="submit" { (t(lang, "Extend", "Prolonger")) } }
                    }
                }
                @if dpo && matches!(status, Status::Received | Status::AwaitingController | Status::Approved) {
                    form method="post" action={ (path) "/cancel" } {
                        (pages::csrf_field(csrf))
                        fieldset { legend { (t(lang, "Cancel the request", "Annuler la demande")) }
                            label for="cancel-reason" { (t(lang, "Reason (optional)", "Motif (facultatif)")) }
                            input type="text" id="cancel-reason" name="reason";
                            button.danger type="submit" { (t(lang, "Cancel", "Annuler")) } }
                    }
                }

                h2 { (t(lang, "Systems", "Systèmes")) }
                @if tasks.is_empty() { p.muted { (t(lang, "No task yet: tasks are made when the controller approves.", "Pas encore de tâche : elles sont créées à l'approbation du responsable.")) } }
                @else { div.scroll { table {
                    thead { tr {
                        th scope="col" { (t(lang, "System", "Système")) }
                        th scope="col" { (t(lang, "Status", "Statut")) }
                        th scope="col" { (t(lang, "Attempts", "Tentatives")) }
                        th scope="col" { (t(lang, "Last error", "Dernière erreur")) }
                    } }
                    tbody { @for task in &tasks { tr {
                        td { (task.system_name) }
                        td { (serde_json::to_value(task.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                        td {
                            (task.attempts - task.interrupted) " / " (task.max_attempts)
                            @if task.interrupted > 0 {
                                " " span.muted { "(" (task.interrupted) " " (t(lang, "interrupted", "interrompue(s)")) ")" }
                            }
                        }
                        td { @if let Some(e) = &task.last_error { code { (e) } } }
                    } } }
                } } }

                h2 { (t(lang, "Timeline", "Chronologie")) }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { (t(lang, "When", "Quand")) }
                        th scope="col" { (t(lang, "Who", "Qui")) }
                        th scope="col" { (t(lang, "What", "Quoi")) }
                    } }
                    tbody { @for event in &events { tr {
                        td { (pages::when_ms(event.at)) }
                        td { code { (event.actor) } }
                        td { (event.action) @if event.details != "{}" { " " code.muted { (event.details) } } }
                    } } }
                } }

                @if !emails.is_empty() {
                    h2 { (t(lang, "E-mails", "E-mails")) }
                    div.scroll { table {
                        thead { tr {
                            th scope="col" { (t(lang, "Message", "Message")) }
                            th scope="col" { (t(lang, "To", "À")) }
                            th scope="col" { (t(lang, "Status", "Statut")) }
                            th scope="col" { (t(lang, "Note", "Remarque")) }
                        } }
                        tbody { @for email in &emails { tr {
                            td { (email.event) }
                            td { (email.recipient) }
                            td { (email.status) " (" (email.attempts) ")" }
                            td { @if let Some(e) = &email.last_error { (e) } }
                        } } }
                    } }
                }
            }
        },
    )
}

/// A step on a request, through the API's handler for it.
pub async fn act(
    State(app): State<Arc<App>>,
    SignedIn { caller, lang }: SignedIn,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<Params>,
) -> Response {
    if !pages::csrf_ok(&app, &headers, &form) {
        return failed(
            &app,
            lang,
            ApiError::Forbidden(
                t(
                    lang,
                    "The form had expired; open the request again and retry.",
                    "Le formulaire avait expiré ; rouvrez la demande et recommencez.",
                )
                .into(),
            ),
        );
    }
    let reason = form
        .get("reason")
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let (state, path) = (State(app.clone()), Path(id.clone()));
    let done = match action.as_str() {
        "approve" => api::approve(state, caller, path).await.map(drop),
        "reject" => api::reject(state, caller, path, Json(Reason { reason }))
            .await
            .map(drop),
        "cancel" => api::cancel(state, caller, path, OptionalJson(Reason { reason }))
            .await
            .map(drop),
        "retry" => api::retry(state, caller, path).await.map(drop),
        "extend" => {
            let months = form.get("months").and_then(|m| m.parse().ok()).unwrap_or(0);
            api::extend(
                state,
                caller,
                path,
                Json(Extension {
                    months,
                    reason: reason.unwrap_or_default(),
                }),
            )
            .await
            .map(drop)
        }
        _ => Err(ApiError::NotFound(format!("no step {action:?}"))),
    };
    match done {
        Ok(()) => Redirect::to(&format!("/console/requests/{id}")).into_response(),
        Err(e) => failed(&app, lang, e),
    }
}

/// The evidence of a request, through the API's handlers.
pub async fn download(
    State(app): State<Arc<App>>,
    SignedIn { caller, lang }: SignedIn,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    let (state, path) = (State(app.clone()), Path(id.clone()));
    let attachment = |name: String, json: serde_json::Value| {
        let mut response = axum::Json(json).into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, value);
        }
        response
    };
    let answer = match file.as_str() {
        "certificate.json" => api::certificate(state, caller, path)
            .await
            .map(|j| attachment(format!("oubli-certificate-{id}.json"), j.0)),
        "certificate.html" => {
            let page = api::CertificatePage { lang: Some(lang) };
            api::certificate_html(state, caller, path, Query(page))
                .await
                .map(IntoResponse::into_response)
        }
        "package.json" => api::package(state, caller, path)
            .await
            .map(|j| attachment(format!("oubli-access-{id}.json"), j.0)),
        "package.html" => api::package_html(state, caller, path)
            .await
            .map(IntoResponse::into_response),
        _ => Err(ApiError::NotFound(format!("no download {file:?}"))),
    };
    answer.unwrap_or_else(|e| failed(&app, lang, e))
}

/// The audit trail (auditors and admins), newest page first by `after`.
pub async fn audit(
    State(app): State<Arc<App>>,
    SignedIn { caller, lang }: SignedIn,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Response {
    let filters: Params = query
        .iter()
        .filter(|(k, v)| ["after", "request_id", "action"].contains(&k.as_str()) && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut params = filters.clone();
    params.insert("limit".into(), "200".into());
    let page: Page<crate::audit::Event> =
        match super::admin::audit_events(State(app.clone()), caller.clone(), Query(params)).await {
            Ok(Json(page)) => page,
            Err(e) => return failed(&app, lang, e),
        };
    console_page(
        Ctx {
            app: &app,
            lang,
            query: &query,
            headers: &headers,
        },
        &caller,
        t(lang, "Audit trail", "Journal d'audit"),
        "/console/audit",
        |_| {
            html! {
                h1 { (t(lang, "Audit trail", "Journal d'audit")) }
                p.muted { (t(lang, "Every event is chained to the one before by its hash; `oubli audit verify` checks the chain.", "Chaque événement est chaîné au précédent par son empreinte ; `oubli audit verify` vérifie la chaîne.")) }
                div.scroll { table {
                    thead { tr {
                        th scope="col" { "#" }
                        th scope="col" { (t(lang, "When", "Quand")) }
                        th scope="col" { (t(lang, "Who", "Qui")) }
                        th scope="col" { (t(lang, "What", "Quoi")) }
                        th scope="col" { (t(lang, "Request", "Demande")) }
                    } }
                    tbody { @for event in &page.items { tr {
                        td { (event.seq) }
                        td { (pages::when_ms(event.at)) }
                        td { code { (event.actor) } }
                        td { (event.action) }
                        td { @if let Some(r) = &event.request_id { a href={ "/console/requests/" (r) } { code { (r) } } } }
                    } } }
                } }
                @if let Some(next) = &page.next { p { a href={ "/console/audit?" (next_page(&filters, next)) } { (t(lang, "Next page", "Page suivante")) } } }
            }
        },
    )
}

/// Controllers, systems, plugins and tokens (admins).
pub async fn admin(
    State(app): State<Arc<App>>,
    SignedIn { caller, lang }: SignedIn,
    headers: HeaderMap,
    Query(query): Query<Params>,
) -> Response {
    if let Err(e) = super::require(&caller, &[Role::Admin]) {
        return failed(&app, lang, e);
    }
    let gathered = async {
        let controllers = crate::controller::list_controllers(&app.store).await?;
        let mut systems = Vec::new();
        for c in &controllers {
            for s in crate::controller::list_systems(&app.store, &c.id).await? {
                systems.push((c.name.clone(), s));
            }
        }
        let plugins = crate::controller::list_plugins(&app.store).await?;
        let tokens = auth::list(&app.store).await?;
        anyhow::Ok((controllers, systems, plugins, tokens))
    };
    let (controllers, systems, plugins, tokens) = match gathered.await {
        Ok(all) => all,
        Err(e) => return failed(&app, lang, ApiError::Internal(e)),
    };
    let name_of = |id: &Option<String>| {
        id.as_ref()
            .and_then(|id| controllers.iter().find(|c| &c.id == id))
            .map(|c| c.name.clone())
            .unwrap_or_default()
    };
    console_page(
        Ctx {
            app: &app,
            lang,
            query: &query,
            headers: &headers,
        },
        &caller,
        t(lang, "Administration", "Administration"),
        "/console/admin",
        |_| {
            html! {
                h1 { (t(lang, "Administration", "Administration")) }
                p.muted { (t(lang, "Changes are made through the API (/v1/openapi.json) or the oubli command.", "Les modifications passent par l'API (/v1/openapi.json) ou la commande oubli.")) }
                h2 { (t(lang, "Controllers", "Responsables du traitement")) }
                div.scroll { table {
                    thead { tr { th scope="col" { (t(lang, "Name", "Nom")) } th scope="col" { (t(lang, "Contact", "Contact")) } th scope="col" { "Webhook" } th scope="col" { (t(lang, "Approves its DPO's requests itself", "Approuve d'office les demandes de son DPO")) } } }
                    tbody { @for c in &controllers { tr {
                        td { (c.name) br; code.muted { (c.id) } }
                        td { (c.contact_email.as_deref().unwrap_or("—")) }
                        td { code { (c.webhook_url.as_deref().unwrap_or("—")) } }
                        td { (if c.auto_approve { t(lang, "yes", "oui") } else { t(lang, "no", "non") }) }
                    } } }
                } }
                h2 { (t(lang, "Connected systems", "Systèmes connectés")) }
                div.scroll { table {
                    thead { tr { th scope="col" { (t(lang, "System", "Système")) } th scope="col" { (t(lang, "Controller", "Responsable")) } th scope="col" { "Plugin" } } }
                    tbody { @for (controller, s) in &systems { tr {
                        td { (s.name) } td { (controller) } td { code { (s.plugin.get(..16).unwrap_or(&s.plugin)) } }
                    } } }
                } }
                h2 { "Plugins" }
                div.scroll { table {
                    thead { tr { th scope="col" { (t(lang, "Name", "Nom")) } th scope="col" { (t(lang, "Contract", "Contrat")) } th scope="col" { (t(lang, "Digest", "Empreinte")) } th scope="col" { (t(lang, "Status", "Statut")) } } }
                    tbody { @for p in &plugins { tr {
                        td { (p.name) } td { (p.contract) } td { code { (p.digest.get(..16).unwrap_or(&p.digest)) } }
                        td {
                            @match p.status {
                                PluginStatus::Ready => (t(lang, "ready", "prêt")),
                                PluginStatus::Compiling => (t(lang, "compiling", "en compilation")),
                                PluginStatus::Failed => { (t(lang, "failed", "échec")) @if let Some(e) = &p.error { ": " code { (e) } } }
                            }
                        }
                    } } }
                } }
                h2 { (t(lang, "Tokens", "Jetons")) }
                div.scroll { table {
                    thead { tr { th scope="col" { (t(lang, "Label", "Libellé")) } th scope="col" { (t(lang, "Role", "Rôle")) } th scope="col" { (t(lang, "Controller", "Responsable")) } th scope="col" { "E-mail" } th scope="col" { (t(lang, "State", "État")) } } }
                    tbody { @for token in &tokens { tr {
                        td { (token.label) } td { (token.role) } td { (name_of(&token.controller_id)) }
                        td { (token.email.as_deref().unwrap_or("—")) }
                        td { (if token.revoked_at.is_some() { t(lang, "revoked", "révoqué") } else { t(lang, "active", "actif") }) }
                    } } }
                } }
            }
        },
    )
}
