//! Mentions of the subject in free-text fields of other people's records (a note that
//! names them): found on oubli's side in any case, exported as the text around each
//! occurrence, erased by replacing only the occurrences with `[erased]`.

use crate::api::{self, Collection};
use oubli_connector::{Subject, mention_spans};
use serde_json::Value;

/// What an occurrence becomes.
pub const ERASED: &str = "[erased]";

/// How much text is kept on each side of an occurrence in an export, in characters.
const AROUND: usize = 60;

/// Shorter values (a customer number `42`) would be found in any text: they are not
/// looked for as mentions.
const MIN_CHARS: usize = 5;

/// The values looked for: the subject's identities of the kinds the collection's search
/// takes, trimmed.
pub fn values<'a>(collection: &Collection, subject: &'a Subject) -> Vec<(&'a str, &'a str)> {
    subject
        .identities
        .iter()
        .filter(|i| collection.search.by.contains_key(&i.kind))
        .map(|i| (i.kind.as_str(), i.value.trim()))
        .filter(|(_, v)| v.chars().count() >= MIN_CHARS)
        .collect()
}

/// Each mention field of `record` that names one of `values` (in any case), with
/// the kinds it names.
pub fn fields(
    collection: &Collection,
    record: &Value,
    values: &[(&str, &str)],
) -> Vec<(String, Vec<String>)> {
    collection
        .mentions
        .iter()
        .filter_map(|path| {
            let text = api::at(record, path)?.as_str()?;
            let kinds: Vec<String> = values
                .iter()
                .filter(|(_, value)| !spans(text, value).is_empty())
                .map(|(kind, _)| (*kind).to_owned())
                .collect();
            (!kinds.is_empty()).then(|| (path.clone(), kinds))
        })
        .collect()
}

/// The byte ranges of `value` in `text`, in any case (both folded by [`fold`], which keeps
/// every byte offset).
fn spans(text: &str, value: &str) -> Vec<std::ops::Range<usize>> {
    mention_spans(&fold(text), &fold(value))
}

/// `text` in lower case, character by character, where the lower case takes as many bytes
/// (`É` → `é`, `DOE` → `doe`); a character whose lower case would not (`İ`) stays, so the
/// offsets into `text` stay valid.
fn fold(text: &str) -> String {
    text.chars()
        .map(|c| {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) if l.len_utf8() == c.len_utf8() => l,
                _ => c,
            }
        })
        .collect()
}

/// `text` with every occurrence of each value replaced by [`ERASED`].
pub fn redact(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (_, value) in values {
        let mut redacted = String::with_capacity(out.len());
        let mut last = 0;
        for span in spans(&out, value) {
            redacted.push_str(&out[last..span.start]);
            redacted.push_str(ERASED);
            last = span.end;
        }
        redacted.push_str(&out[last..]);
        out = redacted;
    }
    out
}

/// The update that replaces the occurrences in each of `fields` of `record`, and nothing
/// else.
pub fn redaction(
    record: &Value,
    fields: &[(String, Vec<String>)],
    values: &[(&str, &str)],
) -> Value {
    let mut body = serde_json::Map::new();
    for (field, _) in fields {
        let text = api::at(record, field)
            .and_then(Value::as_str)
            .unwrap_or_default();
        api::set(&mut body, field, Value::String(redact(text, values)));
    }
    Value::Object(body)
}

/// The text around each occurrence of a value, for an export: what the subject has a
/// right to see of another person's record, and no more.
pub fn excerpts(text: &str, values: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (_, value) in values {
        for span in spans(text, value) {
            let before: String = {
                let mut chars: Vec<char> = text[..span.start].chars().rev().take(AROUND).collect();
                chars.reverse();
                chars.into_iter().collect()
            };
            let after: String = text[span.end..].chars().take(AROUND).collect();
            out.push(format!("…{before}{}{after}…", &text[span.clone()]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_occurrences_are_replaced_in_any_case() {
        let values = [("email", "e.doe@example.net")];
        let text =
            "Call E.Doe@Example.net today; not jane.doe@example.net. Again: e.doe@example.net.";
        assert_eq!(
            redact(text, &values),
            "Call [erased] today; not jane.doe@example.net. Again: [erased]."
        );
        let accented = [("name", "Éloïse Dupré")];
        assert_eq!(
            redact("Voir ÉLOÏSE DUPRÉ demain", &accented),
            "Voir [erased] demain"
        );
        let quoted = excerpts(text, &values);
        assert_eq!(quoted.len(), 2);
        assert!(quoted[0].contains("E.Doe@Example.net"), "{quoted:?}");
    }
}
