//! Phone numbers compared by their digits: the forms in which a number typed by a DPO
//! may be stored (international with `+` or `00`, national with the region's trunk
//! prefix, `+33 (0)6…`), as digit strings a column's digits are compared with.

/// Region → (country calling code, national trunk prefix).
const TABLE: &[(&str, &str, &str)] = &[
    ("AT", "43", "0"),
    ("BE", "32", "0"),
    ("CA", "1", "1"),
    ("CH", "41", "0"),
    ("DE", "49", "0"),
    ("DK", "45", ""),
    ("DZ", "213", "0"),
    ("ES", "34", ""),
    ("FI", "358", "0"),
    ("FR", "33", "0"),
    ("GB", "44", "0"),
    ("GF", "594", "0"),
    ("GP", "590", "0"),
    ("IE", "353", "0"),
    ("IT", "39", ""),
    ("LU", "352", ""),
    ("MA", "212", "0"),
    ("MC", "377", ""),
    ("MQ", "596", "0"),
    ("NC", "687", ""),
    ("NL", "31", "0"),
    ("NO", "47", ""),
    ("PF", "689", ""),
    ("PL", "48", ""),
    ("PT", "351", ""),
    ("RE", "262", "0"),
    ("SE", "46", "0"),
    ("SN", "221", ""),
    ("TN", "216", ""),
    ("US", "1", "1"),
];

/// The regions whose numbers can be read in national form.
pub const REGIONS: &[&str] = &[
    "AT", "BE", "CA", "CH", "DE", "DK", "DZ", "ES", "FI", "FR", "GB", "GF", "GP", "IE", "IT", "LU",
    "MA", "MC", "MQ", "NC", "NL", "NO", "PF", "PL", "PT", "RE", "SE", "SN", "TN", "US",
];

/// Fewer digits than this are not a phone number worth matching.
const MIN_DIGITS: usize = 6;

/// The calling code and trunk prefix of `region` (`FR`, case-insensitive).
pub fn calling_code(region: &str) -> Option<(&'static str, &'static str)> {
    TABLE
        .iter()
        .find(|(r, _, _)| r.eq_ignore_ascii_case(region))
        .map(|(_, code, trunk)| (*code, *trunk))
}

/// The calling code `international` (digits after `+`) starts with, and its trunk prefix.
fn code_of(international: &str) -> Option<(&'static str, &'static str)> {
    TABLE
        .iter()
        .filter(|(_, code, _)| international.starts_with(code))
        .max_by_key(|(_, code, _)| code.len())
        .map(|(_, code, trunk)| (*code, *trunk))
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The digit strings a stored number equal to `value` may have; empty when `value` has
/// too few digits to be a phone number. `region` reads a number typed in national form.
pub fn forms(value: &str, region: Option<&str>) -> Vec<String> {
    let typed = value.trim();
    let all = digits(typed);
    if all.len() < MIN_DIGITS {
        return Vec::new();
    }
    let region = region.and_then(calling_code);
    // The number in international form (calling code first), when it can be known.
    let international = if typed.starts_with('+') {
        Some(all.clone())
    } else if let Some(rest) = all.strip_prefix("00") {
        Some(rest.to_owned())
    } else {
        region.map(|(code, trunk)| {
            let national = all
                .strip_prefix(trunk)
                .filter(|_| !trunk.is_empty())
                .unwrap_or(&all);
            format!("{code}{national}")
        })
    };
    let mut out = vec![all.clone()];
    if let Some(international) = international {
        out.push(international.clone());
        out.push(format!("00{international}"));
        let known = region
            .filter(|(code, _)| international.starts_with(code))
            .or_else(|| code_of(&international));
        if let Some((code, trunk)) = known {
            let significant = &international[code.len()..];
            // The bare national number (no trunk prefix, no code) only in the region the
            // column was configured with: elsewhere it is another country's number.
            if region.is_some_and(|(c, _)| c == code) {
                out.push(significant.to_owned());
            }
            out.push(format!("{trunk}{significant}"));
            // `+33 (0)6 12 34 56 78`
            out.push(format!("{code}{trunk}{significant}"));
        }
    }
    out.retain(|f| f.len() >= MIN_DIGITS);
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::forms;

    #[test]
    fn a_number_matches_its_national_and_international_forms() {
        let international = forms("+33 6 12 34 56 78", None);
        let national = forms("06.12.34.56.78", Some("FR"));
        for form in ["33612345678", "0033612345678", "0612345678", "330612345678"] {
            assert!(international.contains(&form.to_owned()), "{form}");
            assert!(national.contains(&form.to_owned()), "{form}");
        }
        // Without a region a national number is only its own digits.
        assert_eq!(forms("06 12 34 56 78", None), vec!["0612345678".to_owned()]);
        assert!(forms("12 34", Some("FR")).is_empty());
        // Italy keeps its leading 0; the United States' trunk prefix is 1.
        assert!(forms("06 1234567", Some("IT")).contains(&"39061234567".to_owned()));
        assert!(forms("(555) 123-4567", Some("US")).contains(&"15551234567".to_owned()));
    }
}
