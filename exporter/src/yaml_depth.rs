//! A bound on how deeply a YAML text nests, found by scanning its characters before any parser sees
//! it: the YAML parser's time grows with the square of the depth, so a small file nested 100,000
//! levels would stall start-up or a reload. It does not parse YAML, and may over-count (a bracket in
//! a block scalar), never under-count.

/// The most levels a configuration file may nest (the exporter's own files use three).
pub(crate) const MAX_YAML_DEPTH: usize = 64;

/// A text nested deeper than the limit, at its first line that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nested deeper than {limit} levels (line {line})")]
pub(crate) struct TooDeep {
    pub(crate) limit: usize,
    pub(crate) line: usize,
}

/// Checks that no point of `text` is nested deeper than `limit`: block levels (indentation, and
/// each compact `- ` or `? ` entry) plus open flow collections (`[`, `{` outside quotes and comments).
pub(crate) fn check_depth(text: &str, limit: usize) -> Result<(), TooDeep> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    for (number, line) in text.lines().enumerate() {
        let too_deep = TooDeep {
            limit,
            line: number + 1,
        };
        let content = line.trim_start_matches(' ');
        let mut block = 0;
        if quote.is_none() && flow == 0 && !content.is_empty() && !content.starts_with('#') {
            let indent = line.len() - content.len();
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut rest = content;
            let mut compact = 0;
            while let Some(after) = rest
                .strip_prefix("- ")
                .or_else(|| rest.strip_prefix("? "))
                .or_else(|| (rest == "-").then_some(""))
            {
                compact += 1;
                rest = after.trim_start_matches(' ');
            }
            block = indents.len() + compact;
        }
        let mut previous = ' ';
        let mut chars = content.chars().peekable();
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(open), c) if c == open => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if previous == ' ' || previous == '\t' => break,
                (None, '[' | '{') => {
                    flow += 1;
                    if block + flow > limit {
                        return Err(too_deep);
                    }
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                (None, _) => {}
            }
            previous = c;
        }
        if block + flow > limit {
            return Err(too_deep);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configs_pass() {
        let text = "interval: 3s\nidle_watts: \"package=10,dram=2\"  # a comment [\n\
                    labels:\n  - a\n  - {b: [1, 2]}\nkey: 'it''s [ fine'\n";
        assert_eq!(check_depth(text, 8), Ok(()));
    }

    #[test]
    fn flow_block_and_compact_bombs_are_refused_at_their_line() {
        let flow = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            check_depth(&flow, MAX_YAML_DEPTH),
            Err(TooDeep {
                limit: MAX_YAML_DEPTH,
                line: 1
            })
        );
        let compact = format!("x: 1\n{}x\n", "- ".repeat(100));
        assert_eq!(check_depth(&compact, 64).unwrap_err().line, 2);
        let block: String = (0..70).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert_eq!(check_depth(&block, 64).unwrap_err().line, 65);
        assert_eq!(check_depth(&block, 70), Ok(()));
        let across_lines = "a: [\n[\n[\n";
        assert_eq!(check_depth(across_lines, 2).unwrap_err().line, 3);
    }
}
