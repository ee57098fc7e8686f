//! Text read back from a server (`top`, `report`): label values and error messages, made safe to
//! print. What the series mean (names, the node-total zone rule) is `crate::catalog`'s. Pure
//! functions; no I/O.

/// Longest label value shown; longer ones are cut with an ellipsis.
pub(crate) const MAX_LABEL_CHARS: usize = 120;

/// Longest message from a server (an error text, a reason) shown; longer ones are cut.
pub(crate) const MAX_MESSAGE_CHARS: usize = 200;

/// A label value made safe to print on a terminal: control characters (escape sequences could
/// garble the screen) and bidirectional overrides (they reorder what is shown) become `?`, and
/// very long values are cut with an ellipsis.
pub(crate) fn clean(value: &str) -> String {
    cut(value, MAX_LABEL_CHARS)
}

/// A message from a server (an error text, a status line, a JSON reason) made safe to print:
/// the rule of [`clean`], cut at [`MAX_MESSAGE_CHARS`].
pub(crate) fn clean_message(message: &str) -> String {
    cut(message, MAX_MESSAGE_CHARS)
}

/// `text`, or `fallback` when `text` is empty (Prometheus treats an empty label as absent).
pub(crate) fn or_if_empty<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    if text.is_empty() {
        fallback
    } else {
        text
    }
}

/// Characters that change how a terminal shows the text after them rather than showing
/// themselves: C0 and C1 controls (ESC starts escape sequences), and the Unicode bidirectional
/// controls and invisible separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// A number from a server with `decimals` decimals: "n/a" for NaN and infinities (never "NaN" or
/// "inf"), and never "-0.0".
pub(crate) fn figure(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "n/a".to_string();
    }
    let text = format!("{value:.decimals$}");
    match text.strip_prefix('-') {
        Some(magnitude) if magnitude.bytes().all(|b| b == b'0' || b == b'.') => {
            magnitude.to_string()
        }
        _ => text,
    }
}

/// A ratio as a percentage with one decimal ("12.5%"), or "n/a".
pub(crate) fn percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{}%", figure(ratio * 100.0, 1))
    } else {
        "n/a".to_string()
    }
}

/// Names a series whose value is NaN or infinite, for a warning: `family{label="value",...}`,
/// labels made safe to print.
pub(crate) fn non_finite_series<'a>(
    family: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    value: f64,
) -> String {
    let labels: Vec<String> = labels
        .map(|(k, v)| format!("{}=\"{}\"", clean(k), clean(v)))
        .collect();
    format!("{}{{{}}} is {value}", clean(family), labels.join(","))
}

fn cut(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4 + 3));
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        out.push(if is_unsafe(c) { '?' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cleaned_for_terminals() {
        assert_eq!(clean("a\u{1b}[2Jb\n"), "a?[2Jb?");
        assert_eq!(clean("\u{9b}31m\u{202e}txt.exe"), "?31m?txt.exe");
        let long = clean(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_LABEL_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn figures_say_n_a_and_never_negative_zero() {
        assert_eq!(figure(-0.0, 6), "0.000000");
        assert_eq!(figure(-1e-12, 3), "0.000");
        assert_eq!(figure(-0.04, 1), "0.0");
        assert_eq!(figure(-0.06, 1), "-0.1");
        assert_eq!(figure(f64::NEG_INFINITY, 3), "n/a");
        assert_eq!(figure(f64::NAN, 0), "n/a");
        assert_eq!(percent(-1e-9), "0.0%");
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(percent(f64::INFINITY), "n/a");
        let named = non_finite_series("x", [("a\u{1b}", "b\n")].into_iter(), f64::NAN);
        assert_eq!(named, "x{a?=\"b?\"} is NaN");
    }

    #[test]
    fn messages_are_cut_at_200_characters() {
        let long = clean_message(&format!("\u{1b}]0;pwned\u{7}{}", "é".repeat(100_000)));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(long.starts_with("?]0;pwned?é"), "{long}");
        assert!(long.ends_with('…'));
        assert_eq!(clean_message("short"), "short");
        assert_eq!(clean_message(&"y".repeat(200)), "y".repeat(200));
    }
}
