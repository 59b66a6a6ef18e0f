//! The controller's approval page, `/approve/{token}`: what a forwarded request asks
//! (kind, the subject's identities, a rectification's changes, the due date, who filed it
//! and when, the systems it will touch), with Approve and Reject (a reason required). The
//! decision goes through `request::lifecycle` like the API's, audited with the link as the
//! actor (`link:<id>`); a link works once, until it expires, and afterwards says so and
//! shows the decision taken.

use super::pages::{self, Lang, t};
use crate::app::App;
use crate::audit;
use crate::notify::links::{self, APPROVAL, Link};
use crate::request::Status;
use crate::request::lifecycle;
use crate::request::rows::{self as requests, Request};
use crate::store::now_ms;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The longest reason a rejection takes.
const MAX_REASON: usize = 2_000;

/// The link behind a token, or the page that says it is not one.
async fn link_of(app: &App, lang: Lang, token: &str) -> Result<Link, Response> {
    let not_valid = || {
        pages::problem(
            app,
            lang,
            StatusCode::NOT_FOUND,
            t(lang, "This link is not valid", "Ce lien n'est pas valide"),
            t(
                lang,
                "Check that the whole link from the e-mail or webhook was copied. Nothing was decided.",
                "Vérifiez que le lien de l'e-mail ou du webhook a été copié en entier. Rien n'a été décidé.",
            ),
            None,
        )
    };
    let Some(id) = app.keys.link_id(APPROVAL, token) else {
        return Err(not_valid());
    };
    match links::find(&app.store, id).await {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(not_valid()),
        Err(e) => Err(internal(app, lang, &e.into())),
    }
}

fn internal(app: &App, lang: Lang, error: &anyhow::Error) -> Response {
    let status = failure_status(error);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(
            error = format!("{error:#}"),
            "an approval page met an outage"
        );
    } else {
        tracing::error!(error = format!("{error:#}"), "an approval page failed");
    }
    pages::problem(
        app,
        lang,
        status,
        t(lang, "Something went wrong", "Une erreur est survenue"),
        t(
            lang,
            "oubli could not do this now. Nothing was decided; try again in a moment.",
            "oubli n'a pas pu le faire. Rien n'a été décidé ; réessayez dans un instant.",
        ),
        None,
    )
}

/// The status of a page whose step failed: 503 for an outage (the database out of reach,
/// busy, or a step rolled back to settle a conflict with another writer), as the API
/// answers it; 500 otherwise.
fn failure_status(error: &anyhow::Error) -> StatusCode {
    if super::error::outage(error).is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Who filed the request: its token's label.
pub async fn filed_by(app: &App, request_id: &str) -> anyhow::Result<String> {
    let label: Option<String> = sqlx::query_scalar(
        "SELECT t.label FROM requests r JOIN tokens t ON t.id = r.submitted_by WHERE r.id = $1",
    )
    .bind(request_id)
    .fetch_optional(&app.store.read)
    .await?;
    Ok(label.unwrap_or_default())
}

/// The approval page.
pub async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let lang = pages::lang(&headers, &query);
    let link = match link_of(&app, lang, &token).await {
        Ok(link) => link,
        Err(page) => return page,
    };
    let request = match requests::get(&app.store, &app.keys.sealer, &link.request_id).await {
        Ok(Some(request)) => request,
        Ok(None) => return internal(&app, lang, &anyhow::anyhow!("the link's request is gone")),
        Err(e) => return internal(&app, lang, &e),
    };
    let open = link.used_at.is_none()
        && !link.expired(now_ms())
        && request.status == Status::AwaitingController;
    // The controller reads the subject's identities: an access to personal data.
    if open {
        let read = async {
            let mut tx = app.store.begin().await?;
            audit::append(
                &mut tx,
                &format!("link:{}", link.id),
                "request.read",
                Some(&request.id),
                json!({}),
            );
            tx.commit().await?;
            anyhow::Ok(())
        };
        if let Err(e) = read.await {
            return internal(&app, lang, &e);
        }
    }
    let systems = match crate::controller::list_systems(&app.store, &request.controller_id).await {
        Ok(systems) => systems.into_iter().map(|s| s.name).collect::<Vec<_>>(),
        Err(e) => return internal(&app, lang, &e),
    };
    let by = match filed_by(&app, &request.id).await {
        Ok(by) => by,
        Err(e) => return internal(&app, lang, &e),
    };
    let (csrf, set) = pages::csrf(&app, &headers);
    let path = format!("/approve/{token}");
    let body = html! {
        h1 { (t(lang, "A request awaits your decision", "Une demande attend votre décision")) }
        @if !open { (decided(lang, &link, &request, query.contains_key("done"))) }
        (summary(lang, &request, &by, &systems, open))
        @if open {
            h2 { (t(lang, "Your decision", "Votre décision")) }
            @if request.kind == crate::request::Kind::Objection {
                p { (t(lang,
                    "As the controller, you instruct the processor: approve to put the person on your suppression list (nothing is erased or changed in your systems), or reject it with a reason.",
                    "En tant que responsable du traitement, vous donnez l'instruction au sous-traitant : approuvez pour inscrire la personne sur votre liste d'opposition (rien n'est effacé ni modifié dans vos systèmes), ou rejetez-la en donnant un motif.")) }
            } @else {
                p { (t(lang,
                    "As the controller, you instruct the processor: approve to have it carried out in the systems above, or reject it with a reason.",
                    "En tant que responsable du traitement, vous donnez l'instruction au sous-traitant : approuvez pour qu'elle soit exécutée dans les systèmes ci-dessus, ou rejetez-la en donnant un motif.")) }
            }
            form method="post" action=(path) {
                (pages::csrf_field(&csrf))
                input type="hidden" name="decision" value="approve";
                button type="submit" id="approve" { (t(lang, "Approve", "Approuver")) }
            }
            form method="post" action=(path) {
                (pages::csrf_field(&csrf))
                input type="hidden" name="decision" value="reject";
                fieldset {
                    legend { (t(lang, "Reject", "Rejeter")) }
                    label for="reason" { (t(lang, "Reason (told to the DPO)", "Motif (communiqué au DPO)")) }
                    textarea id="reason" name="reason" required maxlength=(MAX_REASON) {}
                    button type="submit" id="reject" class="danger" { (t(lang, "Reject", "Rejeter")) }
                }
            }
        }
    };
    pages::respond(
        &app,
        StatusCode::OK,
        &query,
        lang,
        set,
        pages::page(
            lang,
            t(lang, "Request to confirm", "Demande à confirmer"),
            &path,
            None,
            body,
        ),
    )
}

/// What the request asks, for the person deciding.
pub fn summary(
    lang: Lang,
    request: &Request,
    by: &str,
    systems: &[String],
    identities: bool,
) -> Markup {
    html! {
        dl {
            dt { (t(lang, "Kind", "Type")) }
            dd { (pages::kind_label(lang, request.kind.as_str())) }
            dt { (t(lang, "Status", "Statut")) }
            dd class={ "status-" (request.status.as_str()) } { (pages::status_label(lang, request.status.as_str())) }
            @if identities {
                dt { (t(lang, "The person", "La personne")) }
                dd { ul { @for identity in &request.identities { li { (identity.kind) " : " code {
                    (identity.value.as_deref().or(identity.hmac_sha256.as_deref()).unwrap_or("—")) } } } } }
                @if !request.changes.is_empty() {
                    dt { (t(lang, "Changes asked for", "Modifications demandées")) }
                    dd { ul { @for change in &request.changes { li {
                        @if let Some(collection) = &change.collection { (collection) "." }
                        (change.field) " → " code { (change.value.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "—".into())) } } } } }
                }
            }
            @if let Some(reference) = &request.external_ref {
                dt { (t(lang, "Reference", "Référence")) }
                dd { (reference) }
            }
            dt { (t(lang, "Filed by", "Déposée par")) }
            dd { (by) }
            dt { (t(lang, "Received", "Reçue le")) }
            dd { (pages::when(&request.received_at)) }
            dt { (t(lang, "Due", "À traiter avant le")) }
            dd class=[request.overdue.then_some("overdue")] { (pages::when(&request.due_at)) }
            @if let Some(not_before) = &request.not_before {
                dt { (t(lang, "Not before", "Pas avant le")) }
                dd { (pages::when(not_before)) }
            }
            dt { (t(lang, "Systems it will touch", "Systèmes concernés")) }
            dd {
                @if request.kind == crate::request::Kind::Objection { (t(lang, "none: the person goes on the suppression list", "aucun : la personne est inscrite sur la liste d'opposition")) }
                @else if systems.is_empty() { (t(lang, "none connected", "aucun système connecté")) }
                @else { ul { @for system in systems { li { (system) } } } }
            }
        }
    }
}

/// Why the link no longer decides, and what was decided.
fn decided(lang: Lang, link: &Link, request: &Request, just_now: bool) -> Markup {
    let why = if just_now && link.used_at.is_some() && request.status != Status::AwaitingController
    {
        t(
            lang,
            "Your decision was recorded.",
            "Votre décision a été enregistrée.",
        )
    } else if link.used_at.is_some() {
        t(lang, "This link was already used.", "Ce lien a déjà servi.")
    } else if link.expired(now_ms()) {
        t(lang, "This link has expired.", "Ce lien a expiré.")
    } else {
        t(
            lang,
            "A decision was already taken on this request.",
            "Une décision a déjà été prise sur cette demande.",
        )
    };
    html! {
        div.notice role="status" {
            p { strong { (why) } " "
                (t(lang, "The request is now:", "La demande est maintenant :")) " "
                strong { (pages::status_label(lang, request.status.as_str())) } "." }
            @if let Some(reason) = &request.decision_reason {
                p { (t(lang, "Reason given:", "Motif donné :")) " " (reason) }
            }
        }
    }
}

/// Approve or reject through the link.
pub async fn decide(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let lang = pages::lang(&headers, &query);
    let back = format!("/approve/{token}");
    if !pages::csrf_ok(&app, &headers, &form) {
        return pages::problem(
            &app,
            lang,
            StatusCode::FORBIDDEN,
            t(lang, "The form has expired", "Le formulaire a expiré"),
            t(
                lang,
                "Open the page again and decide from there. Nothing was decided.",
                "Rouvrez la page et décidez depuis celle-ci. Rien n'a été décidé.",
            ),
            Some((&back, t(lang, "Back to the request", "Retour à la demande"))),
        );
    }
    let link = match link_of(&app, lang, &token).await {
        Ok(link) => link,
        Err(page) => return page,
    };
    let approve = match form.get("decision").map(String::as_str) {
        Some("approve") => true,
        Some("reject") => false,
        _ => {
            return pages::problem(
                &app,
                lang,
                StatusCode::UNPROCESSABLE_ENTITY,
                t(lang, "No decision", "Aucune décision"),
                t(
                    lang,
                    "Choose Approve or Reject.",
                    "Choisissez Approuver ou Rejeter.",
                ),
                Some((&back, t(lang, "Back to the request", "Retour à la demande"))),
            );
        }
    };
    let reason = form.get("reason").map(|r| r.trim()).unwrap_or_default();
    if !approve && (reason.is_empty() || reason.chars().count() > MAX_REASON) {
        return pages::problem(
            &app,
            lang,
            StatusCode::UNPROCESSABLE_ENTITY,
            t(lang, "A reason is needed", "Un motif est nécessaire"),
            t(
                lang,
                "A rejection needs a reason (at most 2,000 characters), which the DPO is told.",
                "Un rejet demande un motif (2 000 caractères au plus), communiqué au DPO.",
            ),
            Some((&back, t(lang, "Back to the request", "Retour à la demande"))),
        );
    }
    let actor = format!("link:{}", link.id);
    let outcome = async {
        let mut tx = app.store.begin().await?;
        if !links::take(&mut tx, &link.id, now_ms()).await? {
            return anyhow::Ok(false);
        }
        let decided = if approve {
            match requests::stage_in(&mut tx, &link.request_id).await? {
                Some(stage) => lifecycle::approve(&mut tx, &stage, &actor, app.config.max_attempts)
                    .await?
                    .is_ok(),
                None => false,
            }
        } else {
            matches!(
                lifecycle::reject(&mut tx, &link.request_id, &actor, reason).await?,
                Some(Ok(()))
            )
        };
        if decided {
            tx.commit().await?;
        }
        Ok(decided)
    };
    // The page as it is now: the decision taken, whoever took it; it says "recorded" only
    // to the one whose decision it was.
    let to = match outcome.await {
        Ok(true) => {
            if approve {
                app.tasks_ready.notify_waiters();
            }
            format!("{back}?done=1")
        }
        Ok(false) => back,
        Err(e) => return internal(&app, lang, &e),
    };
    axum::response::IntoResponse::into_response(axum::response::Redirect::to(&to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_a_503_and_anything_else_a_500() {
        let gone = anyhow::Error::from(sqlx::Error::PoolClosed).context("approving");
        assert_eq!(failure_status(&gone), StatusCode::SERVICE_UNAVAILABLE);
        let bug = anyhow::anyhow!("the new request vanished");
        assert_eq!(failure_status(&bug), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
