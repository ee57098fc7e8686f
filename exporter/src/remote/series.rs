//! Label values read back from kepler-rs's series (`top`, `report`), made safe to print. What the
//! series mean (names, the node-total zone rule) is `crate::catalog`'s. Pure functions; no I/O.

/// Longest label value shown; longer ones are cut with an ellipsis.
pub const MAX_LABEL_CHARS: usize = 120;

/// A label value made safe to print on a terminal: control characters (escape sequences could
/// garble the screen) become `?`, and very long values are cut with an ellipsis.
pub fn clean(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_LABEL_CHARS + 3));
    for (i, c) in value.chars().enumerate() {
        if i == MAX_LABEL_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cleaned_for_terminals() {
        assert_eq!(clean("a\u{1b}[2Jb\n"), "a?[2Jb?");
        let long = clean(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_LABEL_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
