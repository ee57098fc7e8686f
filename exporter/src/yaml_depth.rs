//! A bound on how deeply a YAML text nests, found by scanning its characters before any parser sees
//! it: the YAML parser's time grows with the square of the depth, so a small file nested 100,000
//! levels would stall start-up or a reload. It does not parse YAML: it tells structure from text
//! (quoted scalars, plain scalars, block scalars, comments) closely enough never to under-count, and
//! may over-count in rare layouts (the lines of a flow collection spread over several indentations).

/// The most levels a configuration file may nest (the exporter's own files use three).
pub(crate) const MAX_YAML_DEPTH: usize = 64;

/// A text nested deeper than the limit, at its first line that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nested deeper than {limit} levels (line {line})")]
pub(crate) struct TooDeep {
    pub(crate) limit: usize,
    pub(crate) line: usize,
}

/// What the scan is inside of when a line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    /// Structure: the next line starts a node.
    Nothing,
    /// A quoted scalar (`'` or `"`) still open.
    Quoted(char),
    /// A block scalar (`|`, `>`): lines indented more than the column, and blank lines, are its text.
    BlockScalar(usize),
    /// A plain scalar in block context: lines indented more than the column continue it.
    Plain(usize),
}

/// A line that started a node, as the lines below it see it.
#[derive(Debug, Clone, Copy)]
struct Parent {
    indent: usize,
    /// Levels the line adds: its sequence entries and its node.
    levels: usize,
    /// Whether it is a sequence entry (`- `, `? `).
    entry: bool,
}

/// Checks that no point of `text` is nested deeper than `limit`: block levels (each line's node
/// and compact `- ` or `? ` entries, over the lines it is indented under) plus open flow collections (`[`, `{` where a node may start,
/// or inside a flow collection). Quoted, plain and block scalars and comments are text: their
/// brackets, dashes and quotes do not count. Linear in the length of `text`.
pub(crate) fn check_depth(text: &str, limit: usize) -> Result<(), TooDeep> {
    let mut parents: Vec<Parent> = Vec::new();
    let mut parents_levels = 0usize;
    let mut flow = 0usize;
    let mut carried = Carried::Nothing;
    // Block levels of the last line that started a node (a scalar's next lines sit inside it).
    let mut block = 0usize;
    for (number, line) in text.lines().enumerate() {
        let too_deep = TooDeep {
            limit,
            line: number + 1,
        };
        // What a scan of this line may still nest, and the error it reports past that.
        let budget = |block: usize| (limit.saturating_sub(block), too_deep);
        let content = line.trim_start_matches([' ', '\t']);
        let indent = line.len() - content.len();
        let blank = content.is_empty() || content.starts_with('#');
        match carried {
            Carried::BlockScalar(column) if blank || indent > column => continue,
            Carried::Plain(column) if !blank && indent > column => {
                // A continuation line of the plain scalar: text up to its end or a `: `.
                carried = scan(content, column, false, None, &mut flow, budget(block))?;
                continue;
            }
            Carried::BlockScalar(_) | Carried::Plain(_) => carried = Carried::Nothing,
            Carried::Nothing | Carried::Quoted(_) => {}
        }
        if let Carried::Quoted(open) = carried {
            carried = scan(content, indent, false, Some(open), &mut flow, budget(block))?;
            continue;
        }
        if blank {
            continue;
        }
        let mut rest = content;
        let mut compact = 0;
        let mut node_column = indent;
        while let Some(after) = rest
            .strip_prefix("- ")
            .or_else(|| rest.strip_prefix("? "))
            .or_else(|| (rest == "-").then_some(""))
        {
            compact += 1;
            node_column = line.len() - rest.len();
            rest = after.trim_start_matches([' ', '\t']);
        }
        if compact == 0 || !rest.starts_with(['|', '>']) {
            // The node's own column (a key's), unless a block scalar follows the indicator.
            node_column = line.len() - rest.len();
        }
        // The lines this one nests under: those less indented, and a key at its own indentation
        // when it is a sequence entry (`key:` then `- item` at the key's column).
        while let Some(top) = parents.last() {
            let sibling = top.indent == indent && (top.entry || compact == 0);
            if top.indent < indent || !(top.indent > indent || sibling) {
                break;
            }
            parents_levels -= top.levels;
            parents.pop();
        }
        // Each entry is a sequence level, and the node after them one more (a mapping or a
        // scalar: one too many for a scalar, never too few).
        let levels = compact + 1;
        parents.push(Parent {
            indent,
            levels,
            entry: compact > 0,
        });
        parents_levels += levels;
        block = parents_levels;
        if block + flow > limit {
            return Err(too_deep);
        }
        carried = scan(rest, node_column, true, None, &mut flow, budget(block))?;
    }
    Ok(())
}

/// Scans one line's `text` (starting at a node when `at_node`, inside a quoted scalar opened by
/// `quote`), counting flow collections in `flow` against `limit`; `column` is where the line's node
/// sits (a block or plain scalar's text is indented more). Returns what continues on the next line.
fn scan(
    text: &str,
    column: usize,
    at_node: bool,
    mut quote: Option<char>,
    flow: &mut usize,
    (limit, too_deep): (usize, TooDeep),
) -> Result<Carried, TooDeep> {
    // Whether a node (scalar, collection) may start here; `plain`: inside a plain scalar.
    let mut at_node = at_node && quote.is_none();
    let mut plain = !at_node && quote.is_none();
    let mut previous = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if let Some(open) = quote {
            if open == '"' && c == '\\' {
                chars.next();
            } else if c == open {
                if open == '\'' && next == Some('\'') {
                    chars.next();
                } else {
                    quote = None;
                }
            }
            previous = c;
            continue;
        }
        let ends_token = |n: Option<char>| {
            n.is_none_or(|n| n == ' ' || n == '\t' || (*flow > 0 && ",[]{}".contains(n)))
        };
        match c {
            ' ' | '\t' => {}
            '#' if previous == ' ' || previous == '\t' => return Ok(Carried::Nothing),
            ':' if ends_token(next) => {
                at_node = true;
                plain = false;
            }
            ',' if *flow > 0 => {
                at_node = true;
                plain = false;
            }
            '[' | '{' if at_node || *flow > 0 => {
                *flow += 1;
                if *flow > limit {
                    return Err(too_deep);
                }
                at_node = true;
                plain = false;
            }
            ']' | '}' if *flow > 0 => {
                *flow -= 1;
                at_node = false;
                plain = false;
            }
            '\'' | '"' if at_node => {
                quote = Some(c);
                at_node = false;
            }
            '|' | '>' if at_node && *flow == 0 => return Ok(Carried::BlockScalar(column)),
            '&' | '!' if at_node => {
                // An anchor or a tag: the node follows it.
                while chars.peek().is_some_and(|n| *n != ' ' && *n != '\t') {
                    chars.next();
                }
            }
            _ if at_node => {
                at_node = false;
                plain = true;
            }
            _ => {}
        }
        previous = c;
    }
    Ok(match quote {
        Some(open) => Carried::Quoted(open),
        None if plain && *flow == 0 => Carried::Plain(column),
        None => Carried::Nothing,
    })
}

/// How deeply a parsed YAML value nests (collections only; a tag adds no level): the oracle the
/// scan is tested and fuzzed against.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parsed_depth(value: &serde_yaml_ng::Value) -> usize {
    use serde_yaml_ng::Value;
    match value {
        Value::Sequence(items) => 1 + items.iter().map(parsed_depth).max().unwrap_or(0),
        Value::Mapping(map) => {
            1 + map
                .iter()
                .map(|(k, v)| parsed_depth(k).max(parsed_depth(v)))
                .max()
                .unwrap_or(0)
        }
        Value::Tagged(tagged) => parsed_depth(&tagged.value),
        _ => 0,
    }
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

    /// Forty unclosed `[` (or forty `- ` entries) as text: over a limit of 8 if they were counted.
    fn brackets() -> String {
        "[".repeat(40)
    }

    #[test]
    fn brackets_in_quoted_scalars_are_text() {
        let b = brackets();
        for text in [
            format!("a: '{b}'\n"),
            format!("a: \"{b}\"\n"),
            format!("a: \"escaped \\\" quote {b}\"\n"),
            format!("a: 'it''s {b}'\n"),
            format!("'{b}': key\n"),
            format!("a: [\"{b}\", '{b}']\n"),
            // A quoted scalar over several lines.
            format!("a: \"first\n  {b}\n  - - - - - - - - - - x\n  last\"\nb: 1\n"),
            format!("a: &anchor !!str '{b}'\n"),
        ] {
            assert_eq!(check_depth(&text, 8), Ok(()), "{text}");
        }
    }

    #[test]
    fn brackets_and_quotes_in_plain_scalars_and_comments_are_text() {
        let b = brackets();
        for text in [
            format!("a: x{b}\n"),
            format!("a: don't {b}\nb: it\"s\n"),
            format!("a: value # {b}\n"),
            format!("# {b}\n  # {b}\na: 1\n"),
            format!("- item {b}\n"),
            // A plain scalar continued on a more indented line.
            format!("a: first\n  {b} second\n  'not a quote\nb: 1\n"),
        ] {
            assert_eq!(check_depth(&text, 8), Ok(()), "{text}");
        }
    }

    #[test]
    fn block_scalars_are_text() {
        let b = brackets();
        let dashes = "- ".repeat(40);
        for header in ["|", ">", "|-", ">+", "|2", "| # comment"] {
            let text = format!(
                "a:\n  script: {header}\n    {b}\n\n      {dashes}x\n    '\n  after: 1\nb: [1, 2]\n"
            );
            assert_eq!(check_depth(&text, 8), Ok(()), "{text}");
        }
        let in_sequence = format!("- |\n  {b}\n  {dashes}\n- x\n");
        assert_eq!(check_depth(&in_sequence, 8), Ok(()));
        // The text ends at the first line no more indented than its key: what follows counts.
        let after = format!("a: |\n  text\nb: {b}\n");
        assert_eq!(check_depth(&after, 8).unwrap_err().line, 3);
    }

    /// A quote inside a plain scalar opens nothing: a bomb after it is still seen.
    #[test]
    fn a_bomb_after_an_apostrophe_or_a_plain_bracket_is_refused() {
        let bomb = "[".repeat(100_000);
        let text = format!("a: it's\nb: {bomb}\n");
        assert_eq!(check_depth(&text, MAX_YAML_DEPTH).unwrap_err().line, 2);
        let text = format!("a: x[\n{}y\n", "- ".repeat(100));
        assert_eq!(check_depth(&text, MAX_YAML_DEPTH).unwrap_err().line, 2);
        let text = format!("a: |\n  {bomb}\nb: {bomb}\n");
        assert_eq!(check_depth(&text, MAX_YAML_DEPTH).unwrap_err().line, 3);
    }

    proptest::proptest! {
        /// The scan never under-counts: whatever YAML-like text it lets through at a limit, the
        /// parser finds nested no deeper than that limit.
        #[test]
        fn what_passes_the_scan_parses_no_deeper_than_the_limit(
            tokens in proptest::collection::vec(
                proptest::sample::select(vec![
                    "[", "]", "{", "}", "- ", "? ", ": ", ":", ",", "'", "\"", "''", "\\", "#", " #",
                    "|", ">", "|-", "&a ", "!!str ", "\n", "\n", "\n  ", "\n    ", "  ", "a", "b", "x y",
                ]),
                0..60,
            ),
            limit in 1usize..5,
        ) {
            let text: String = tokens.concat();
            if check_depth(&text, limit).is_ok() {
                if let Ok(value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
                    proptest::prop_assert!(parsed_depth(&value) <= limit, "{:?}: {:?}", text, value);
                }
            }
        }
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
        // The mapping `a` and two open collections are three levels, reached on line 2.
        let across_lines = "a: [\n[\n[\n";
        assert_eq!(check_depth(across_lines, 2).unwrap_err().line, 2);
        assert_eq!(check_depth(across_lines, 4), Ok(()));
    }
}
