//! Stage-0 lexing: physical lines to logical lines, `${VAR}` expansion and
//! argument splitting, following httpd 2.4's `ap_cfg_getline`,
//! `ap_resolve_env` and `ap_getword_conf`.

/// Longest logical line accepted after `${VAR}` expansion (httpd's own
/// line-length limit is 16 MiB as well).
pub(super) const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One logical line: continuation lines joined, surrounding whitespace
/// trimmed, blank and comment lines already removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogicalLine {
    /// 1-based number of the physical line where this logical line starts.
    pub number: u32,
    /// The joined, trimmed text.
    pub text: String,
}

/// Whitespace as C's `isspace` sees it (space, `\t`, `\n`, `\v`, `\f`, `\r`).
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t'..='\r')
}

/// Trims C-`isspace` whitespace from both ends.
pub(super) fn trim(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Splits `text` into logical lines.
///
/// A line whose last character is a single `\` is joined with the next one
/// (the backslash is removed, nothing else is inserted); `\\` at the end of
/// a line is not a continuation. Comment detection happens after joining,
/// so a comment line ending in `\` swallows the next line, as in httpd.
pub(super) fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Vec::new();
    let mut pending: Option<LogicalLine> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (body, continues) = match raw.strip_suffix('\\') {
            Some(body) if !body.ends_with('\\') => (body, true),
            _ => (raw, false),
        };
        let line = pending.get_or_insert_with(|| LogicalLine {
            number,
            text: String::new(),
        });
        line.text.push_str(body);
        if !continues {
            if let Some(line) = pending.take() {
                push_meaningful(&mut lines, line);
            }
        }
    }
    if let Some(line) = pending.take() {
        push_meaningful(&mut lines, line);
    }
    lines
}

fn push_meaningful(lines: &mut Vec<LogicalLine>, line: LogicalLine) {
    let text = trim(&line.text);
    if text.is_empty() || text.starts_with('#') {
        return;
    }
    lines.push(LogicalLine {
        number: line.number,
        text: text.to_owned(),
    });
}

/// The result of expanding `${NAME}` references in one line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Expansion {
    /// The line with every defined reference replaced.
    pub text: String,
    /// Names that were referenced but not defined (left as written).
    pub undefined: Vec<String>,
}

/// Replaces `${NAME}` with `lookup(NAME)` like `ap_resolve_env`: the name
/// runs to the first `}`; an undefined reference is left as written and
/// scanning resumes just after its `$`. Returns `Err(length)` when the
/// result would exceed [`MAX_LINE_BYTES`].
pub(super) fn expand_vars(
    line: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Expansion, usize> {
    let mut text = String::with_capacity(line.len());
    let mut undefined = Vec::new();
    let mut rest = line;
    while let Some(dollar) = rest.find("${") {
        text.push_str(&rest[..dollar]);
        let after_brace = &rest[dollar + 2..];
        let Some(close) = after_brace.find('}') else {
            text.push_str(&rest[dollar..]);
            rest = "";
            break;
        };
        let name = &after_brace[..close];
        match lookup(name) {
            Some(value) => {
                text.push_str(&value);
                rest = &after_brace[close + 1..];
            }
            None => {
                undefined.push(name.to_owned());
                text.push('$');
                rest = &rest[dollar + 1..];
            }
        }
        if text.len() > MAX_LINE_BYTES {
            return Err(text.len() + rest.len());
        }
    }
    text.push_str(rest);
    if text.len() > MAX_LINE_BYTES {
        return Err(text.len());
    }
    Ok(Expansion { text, undefined })
}

/// Splits a line into words like `ap_getword_conf`.
///
/// Words are separated by whitespace. A word that starts with `"` or `'`
/// runs to the matching quote and may contain whitespace; inside it `\"`
/// (resp. `\'`) and `\\` are escapes. Outside quotes only `\\` is an
/// escape. A quote in the middle of a word is an ordinary character, and a
/// quoted word ends at its closing quote even if text follows directly
/// (`"a"b` is two words). Returns `Err(quote)` for a quoted word without
/// its closing quote (httpd silently runs it to the end of the line).
pub(super) fn split_words(line: &str) -> Result<Vec<String>, char> {
    let chars: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && is_space(chars[i]) {
            i += 1;
        }
        let Some(&first) = chars.get(i) else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            i += 1;
            let mut closed = false;
            while let Some(&c) = chars.get(i) {
                let next = chars.get(i + 1).copied();
                if c == '\\' && (next == Some(first) || next == Some('\\')) {
                    word.push(chars[i + 1]);
                    i += 2;
                } else if c == first {
                    closed = true;
                    i += 1;
                    break;
                } else {
                    word.push(c);
                    i += 1;
                }
            }
            if !closed {
                return Err(first);
            }
        } else {
            while let Some(&c) = chars.get(i) {
                if is_space(c) {
                    break;
                }
                if c == '\\' && chars.get(i + 1) == Some(&'\\') {
                    word.push('\\');
                    i += 2;
                } else {
                    word.push(c);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
}
