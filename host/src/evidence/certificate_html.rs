//! The erasure certificate as a printable page (the "PV de destruction" a processor sends
//! its client), in English or French. It shows what the signed document says and nothing
//! more; the signed JSON stays the proof.

use super::package::escape;
use serde_json::Value;

/// The languages the page is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    En,
    Fr,
}

struct Words {
    title: &'static str,
    intro: &'static str,
    request: &'static str,
    controller: &'static str,
    received: &'static str,
    completed: &'static str,
    subject: &'static str,
    system: &'static str,
    plugin: &'static str,
    collection: &'static str,
    deleted: &'static str,
    anonymised: &'static str,
    retained: &'static str,
    legal_bases: &'static str,
    masked: &'static str,
    read_gone: &'static str,
    read_cleared: &'static str,
    read_kept: &'static str,
    verification: &'static str,
    sweep: &'static str,
    covered: &'static str,
    cut_short: &'static str,
    not_swept: &'static str,
    nothing_found: &'static str,
    no_record: &'static str,
    recipients: &'static str,
    recipient_status: &'static str,
    signature: &'static str,
    verify_with: &'static str,
}

const EN: Words = Words {
    title: "Erasure certificate",
    intro: "This certificate states what oubli erased for the request below, system by system, and how it checked it. It holds no personal data: the subject appears only as keyed hashes.",
    request: "Request",
    controller: "Controller",
    received: "Received",
    completed: "Completed",
    subject: "Subject (keyed hashes)",
    system: "System",
    plugin: "Connector",
    collection: "Collection",
    deleted: "Deleted",
    anonymised: "Anonymised",
    retained: "Retained",
    legal_bases: "Legal basis of what was retained",
    masked: "Fields masked in what was kept",
    read_gone: "read back gone",
    read_cleared: "read back cleared of the subject's data",
    read_kept: "read back kept under their legal basis",
    verification: "Verification",
    sweep: "Broader search (sweep)",
    covered: "searched",
    cut_short: "cut short by its budget: what it did not reach is not covered",
    not_swept: "Not searched",
    nothing_found: "No system found any record of the subject: nothing was erased. Check the identities given before answering the subject.",
    no_record: "No record matched the subject in this system.",
    recipients: "Notices to recipients (Art. 19)",
    recipient_status: "notice",
    signature: "Signature",
    verify_with: "Verify the signed JSON with `oubli certificate verify` and the public key published at /v1/keys.",
};

const FR: Words = Words {
    title: "Procès-verbal de destruction de données personnelles",
    intro: "Ce procès-verbal atteste ce qu'oubli a effacé pour la demande ci-dessous, système par système, et comment il l'a vérifié. Il ne contient aucune donnée personnelle : la personne concernée n'y figure que sous forme d'empreintes à clé.",
    request: "Demande",
    controller: "Responsable de traitement",
    received: "Reçue le",
    completed: "Terminée le",
    subject: "Personne concernée (empreintes à clé)",
    system: "Système",
    plugin: "Connecteur",
    collection: "Collection",
    deleted: "Supprimés",
    anonymised: "Anonymisés",
    retained: "Conservés",
    legal_bases: "Base légale de la conservation",
    masked: "Champs masqués dans ce qui est conservé",
    read_gone: "relus : disparus",
    read_cleared: "relus : débarrassés des données de la personne",
    read_kept: "relus : conservés sous leur base légale",
    verification: "Vérification",
    sweep: "Recherche élargie",
    covered: "explorés",
    cut_short: "interrompue faute de budget : ce qu'elle n'a pas atteint n'est pas couvert",
    not_swept: "Non explorés",
    nothing_found: "Aucun système n'a trouvé d'enregistrement de la personne : rien n'a été effacé. Vérifiez les identifiants fournis avant de répondre à la personne.",
    no_record: "Aucun enregistrement de ce système ne correspond à la personne.",
    recipients: "Avis aux destinataires (art. 19)",
    recipient_status: "état de l'avis",
    signature: "Signature",
    verify_with: "Vérifiez le JSON signé avec `oubli certificate verify` et la clé publique publiée sur /v1/keys.",
};

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s),
        Value::Null => "—".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => escape(&other.to_string()),
    }
}

/// The page for a signed certificate (`{certificate, signature}`).
pub fn html(signed: &Value, lang: Lang) -> String {
    let w = match lang {
        Lang::En => &EN,
        Lang::Fr => &FR,
    };
    let c = &signed["certificate"];
    let mut page = format!(
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}th{{background:#f4f4f4}}.warn{{border:2px solid #b00;padding:.5em}}</style></head><body>\n\
         <h1>{}</h1>\n<p>{}</p>\n<table>\n",
        if lang == Lang::Fr { "fr" } else { "en" },
        w.title,
        w.title,
        w.intro
    );
    for (label, value) in [
        (w.request, &c["request"]["id"]),
        (w.controller, &c["controller"]["name"]),
        (w.received, &c["request"]["received_at"]),
        (w.completed, &c["request"]["completed_at"]),
    ] {
        page.push_str(&format!(
            "<tr><th>{label}</th><td>{}</td></tr>\n",
            text(value)
        ));
    }
    let identities: Vec<String> = c["subject"]["identities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| format!("{} {}", text(&i["kind"]), text(&i["hmac_sha256"])))
        .collect();
    page.push_str(&format!(
        "<tr><th>{}</th><td>{}</td></tr>\n</table>\n",
        w.subject,
        identities.join("<br>")
    ));
    if c["nothing_found"] == true {
        page.push_str(&format!("<p class=\"warn\">{}</p>\n", w.nothing_found));
    }
    for system in c["systems"].as_array().into_iter().flatten() {
        page.push_str(&format!(
            "<h2>{} {}</h2>\n<p>{}: {} {} ({}), contract {}</p>\n",
            w.system,
            text(&system["name"]),
            w.plugin,
            text(&system["plugin"]["name"]),
            text(&system["plugin"]["version"]),
            text(&system["plugin"]["digest"]),
            text(&system["search"]["contract"]),
        ));
        if !system["note"].is_null() {
            page.push_str(&format!("<p class=\"warn\">{}</p>\n", w.no_record));
        }
        let collections = system["collections"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !collections.is_empty() {
            page.push_str(&format!(
                "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>\n",
                w.collection, w.deleted, w.anonymised, w.retained, w.legal_bases, w.masked
            ));
            for row in collections {
                page.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    text(&row["name"]),
                    text(&row["deleted"]),
                    text(&row["anonymised"]),
                    text(&row["retained"]),
                    text(&row["legal_bases"]),
                    text(&row["masked_fields"]),
                ));
            }
            page.push_str("</table>\n");
        }
        let v = &system["verification"];
        page.push_str(&format!(
            "<p><strong>{}</strong>: {}",
            w.verification,
            text(&v["method"])
        ));
        if !v["read_back"].is_null() {
            page.push_str(&format!(
                " — {} {}, {} {}, {} {}",
                text(&v["read_back"]["gone"]),
                w.read_gone,
                text(&v["read_back"]["cleared"]),
                w.read_cleared,
                text(&v["read_back"]["retained"]),
                w.read_kept,
            ));
        }
        page.push_str("</p>\n");
        let sweep = &system["sweep"];
        if !sweep.is_null() {
            page.push_str(&format!(
                "<p><strong>{}</strong>: {} {}{}</p>\n",
                w.sweep,
                text(&sweep["covered"]),
                w.covered,
                if sweep["cut_short"] == true {
                    format!("; {}", w.cut_short)
                } else {
                    String::new()
                }
            ));
            // What it could not search, in the connector's words, as the signed JSON has it.
            if sweep["skipped"].as_array().is_some_and(|s| !s.is_empty()) {
                page.push_str(&format!(
                    "<p class=\"warn\">{}: {}</p>\n",
                    w.not_swept,
                    text(&sweep["skipped"])
                ));
            }
        }
        if !v["unreported"].is_null() {
            page.push_str(&format!(
                "<p class=\"warn\">{}</p>\n",
                text(&v["unreported"]["note"])
            ));
        }
    }
    let told: Vec<String> = c["recipient_notices"]["notices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{} {}</td></tr>",
                text(&r["recipient"]),
                match (lang, r["status"].as_str()) {
                    (Lang::Fr, Some("delivered")) => "remis".to_owned(),
                    (Lang::Fr, Some("pending")) => "en cours d'envoi".to_owned(),
                    (Lang::Fr, Some("failed")) => "abandonné".to_owned(),
                    _ => text(&r["status"]),
                },
                if r["delivered_at"].is_string() {
                    text(&r["delivered_at"])
                } else {
                    String::new()
                }
            )
        })
        .collect();
    if !told.is_empty() {
        page.push_str(&format!(
            "<h2>{}</h2>\n<table><tr><th></th><th>{}</th></tr>\n{}\n</table>\n",
            w.recipients,
            w.recipient_status,
            told.join("\n")
        ));
    }
    page.push_str(&format!(
        "<h2>{}</h2>\n<p>{} {}</p>\n<p>{}</p>\n</body></html>\n",
        w.signature,
        text(&signed["signature"]["algorithm"]),
        text(&signed["signature"]["key_id"]),
        w.verify_with
    ));
    page
}
