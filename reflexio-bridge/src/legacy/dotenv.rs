//! The application's `.env` file, read as pydantic-settings reads it: python-dotenv's syntax (as
//! of python-dotenv 1.2.4)
//! (`export ` prefixes, single and double quotes with their escapes, values across lines inside
//! quotes, whole-line and inline comments, `${VAR}` and `${VAR:-default}` expanded from the
//! file's earlier keys), then keys matched without regard to case.
//!
//! What python-dotenv cannot parse it skips, line by line, and so does this. The application's
//! own environment is not visible here: a `${VAR}` the file does not define expands to its
//! default, or to nothing.

use std::collections::BTreeMap;

/// The values of a `.env` file by lower-cased key, as pydantic-settings (case-insensitive)
/// sees them. A key written without `=` has no value, and is left out: it does not set the
/// setting.
pub(crate) fn parse(text: &str) -> BTreeMap<String, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader {
        chars: text.chars().collect(),
        at: 0,
    };
    // Keys as written, in the order first seen; a later binding replaces the value in place.
    let mut bindings: Vec<(String, Option<String>)> = Vec::new();
    while let Some(binding) = reader.binding() {
        let Some((key, value)) = binding else {
            continue;
        };
        let value = value.map(|v| expand(&v, &bindings));
        match bindings.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => bindings.push((key, value)),
        }
    }
    // pydantic-settings lower-cases the keys in that order: the last of two spellings of a key
    // in first-seen order wins.
    let mut values = BTreeMap::new();
    for (key, value) in bindings {
        match value {
            Some(v) => {
                values.insert(key.to_lowercase(), v);
            }
            None => {
                values.remove(&key.to_lowercase());
            }
        }
    }
    values
}

/// `${NAME}` and `${NAME:-default}` replaced by the value of `NAME` set earlier in the file
/// (`NAME` as written), else the default, else nothing.
fn expand(value: &str, earlier: &[(String, Option<String>)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + len];
        let (name, default) = match inner.find(':') {
            // `${NAME:-default}`; any other `:` makes it no variable.
            Some(colon) if inner[colon..].starts_with(":-") => {
                (&inner[..colon], Some(&inner[colon + 2..]))
            }
            Some(_) => {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                continue;
            }
            None => (inner, None),
        };
        out.push_str(&rest[..start]);
        let found = earlier.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        match found {
            Some(v) => out.push_str(v.as_deref().unwrap_or("")),
            None => out.push_str(default.unwrap_or("")),
        }
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Horizontal whitespace: whitespace but line ends.
fn blank(c: char) -> bool {
    c.is_whitespace() && c != '\n' && c != '\r'
}

struct Reader {
    chars: Vec<char>,
    at: usize,
}

/// A binding: a key and its value, if it has one; `None` for a comment, a blank end or a line
/// that cannot be parsed.
type Binding = Option<(String, Option<String>)>;

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_while(&mut self, p: impl Fn(char) -> bool) -> usize {
        let start = self.at;
        while self.peek().is_some_and(&p) {
            self.at += 1;
        }
        self.at - start
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.at + i) == Some(&c))
    }

    /// The next binding, `None` at the end of the text.
    fn binding(&mut self) -> Option<Binding> {
        self.skip_while(char::is_whitespace);
        self.peek()?;
        let parsed = self.try_binding();
        if parsed.is_none() {
            // Skip the rest of the line, as python-dotenv does with a line it cannot parse.
            self.skip_while(|c| c != '\n' && c != '\r');
            if matches!(self.peek(), Some('\r' | '\n')) {
                self.at += 1;
            }
            return Some(None);
        }
        parsed
    }

    fn try_binding(&mut self) -> Option<Binding> {
        // `export` and at least one blank.
        if self.starts_with("export") {
            let at = self.at;
            self.at += "export".len();
            if self.skip_while(blank) == 0 {
                self.at = at;
            }
        }
        let key = match self.peek() {
            Some('#') => None,
            Some('\'') => {
                self.at += 1;
                let len = self.skip_while(|c| c != '\'');
                if len == 0 || self.peek() != Some('\'') {
                    return None;
                }
                self.at += 1;
                Some(self.chars[self.at - 1 - len..self.at - 1].iter().collect())
            }
            _ => {
                let start = self.at;
                let len = self.skip_while(|c| c != '=' && c != '#' && !c.is_whitespace());
                if len == 0 {
                    return None;
                }
                Some(self.chars[start..self.at].iter().collect::<String>())
            }
        };
        self.skip_while(blank);
        let value = if self.peek() == Some('=') {
            self.at += 1;
            self.skip_while(blank);
            Some(self.value()?)
        } else {
            None
        };
        // An inline comment, then the end of the line.
        self.skip_while(blank);
        if self.peek() == Some('#') {
            self.skip_while(|c| c != '\n' && c != '\r');
        }
        match self.peek() {
            None => {}
            Some('\r') => {
                self.at += 1;
                if self.peek() == Some('\n') {
                    self.at += 1;
                }
            }
            Some('\n') => self.at += 1,
            Some(_) => return None,
        }
        Some(key.map(|k| (k, value)))
    }

    fn value(&mut self) -> Option<String> {
        match self.peek() {
            Some(quote @ ('\'' | '"')) => {
                self.at += 1;
                let body = self.quoted(quote)?;
                Some(unescape(&body, quote))
            }
            None | Some('\n' | '\r') => Some(String::new()),
            Some(_) => {
                let start = self.at;
                self.skip_while(|c| c != '\n' && c != '\r');
                // A `#` after whitespace starts a comment (`KEY=#x` is `#x`).
                let chars = &self.chars[start..self.at];
                let cut = (1..chars.len())
                    .find(|&i| chars[i] == '#' && chars[i - 1].is_whitespace())
                    .map(|i| {
                        let mut j = i;
                        while j > 0 && chars[j - 1].is_whitespace() {
                            j -= 1;
                        }
                        j
                    })
                    .unwrap_or(chars.len());
                Some(
                    chars[..cut]
                        .iter()
                        .collect::<String>()
                        .trim_end()
                        .to_owned(),
                )
            }
        }
    }

    /// The body of a quoted value whose opening `quote` was read, as python-dotenv's pattern
    /// `'((?:\\'|[^'])*)'` finds it: up to the first quote not escaped by a backslash, or, if
    /// every later quote is escaped, up to the last of them (the backslash before it then
    /// being a character of its own); `None` without a closing quote.
    fn quoted(&mut self, quote: char) -> Option<String> {
        let start = self.at;
        let mut i = start;
        let mut last_escaped = None;
        while i < self.chars.len() {
            match self.chars[i] {
                '\\' if self.chars.get(i + 1) == Some(&quote) => {
                    last_escaped = Some(i + 1);
                    i += 2;
                }
                c if c == quote => {
                    self.at = i + 1;
                    return Some(self.chars[start..i].iter().collect());
                }
                _ => i += 1,
            }
        }
        let close = last_escaped?;
        self.at = close + 1;
        Some(self.chars[start..close].iter().collect())
    }
}

/// A quoted body with its escapes decoded: in single quotes `\\` and `\'`; in double quotes
/// also `\"`, `\a`, `\b`, `\f`, `\n`, `\r`, `\t` and `\v`. Any other backslash stays.
fn unescape(body: &str, quote: char) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match (quote, chars.peek().copied()) {
            (_, Some('\\')) => Some('\\'),
            (_, Some('\'')) => Some('\''),
            ('"', Some('"')) => Some('"'),
            ('"', Some('a')) => Some('\u{7}'),
            ('"', Some('b')) => Some('\u{8}'),
            ('"', Some('f')) => Some('\u{c}'),
            ('"', Some('n')) => Some('\n'),
            ('"', Some('r')) => Some('\r'),
            ('"', Some('t')) => Some('\t'),
            ('"', Some('v')) => Some('\u{b}'),
            _ => None,
        };
        match decoded {
            Some(d) => {
                chars.next();
                out.push(d);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A boolean as pydantic reads one from a string: `1`/`0`, `true`/`false`, `t`/`f`,
/// `yes`/`no`, `y`/`n`, `on`/`off`, in any case; nothing else (not even with spaces around).
pub(crate) fn pydantic_bool(s: &str) -> Option<bool> {
    const TRUE: [&str; 6] = ["1", "true", "t", "yes", "y", "on"];
    const FALSE: [&str; 6] = ["0", "false", "f", "no", "n", "off"];
    if TRUE.iter().any(|t| s.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| s.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// A number as pydantic reads one from a string: spaces around are ignored, single `_`
/// between characters too (`0.7`, ` 7e-1 `, `1_000`, `inf`).
pub(crate) fn pydantic_float(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    s.replace('_', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String)> {
        parse(text).into_iter().collect()
    }

    fn one(text: &str, key: &str) -> Option<String> {
        parse(text).get(key).cloned()
    }

    /// Each case was checked against python-dotenv 1.2 and pydantic-settings 2.14
    /// (`DotEnvSettingsSource`, case-insensitive).
    #[test]
    fn values_are_read_as_python_dotenv_reads_them() {
        let cases: &[(&str, Option<&str>)] = &[
            ("K=true", Some("true")),
            ("K = true ", Some("true")),
            ("  export K=1", Some("1")),
            ("export\tK=1", Some("1")),
            ("K=1 # inline comment", Some("1")),
            ("K=1# not a comment", Some("1# not a comment")),
            ("K=#value", Some("#value")),
            (
                "K= # a comment after `=` and blanks",
                Some("# a comment after `=` and blanks"),
            ),
            ("K=", Some("")),
            ("K", None),
            ("K='single # kept'", Some("single # kept")),
            ("K=\"double\" # comment", Some("double")),
            ("K=' spaced '", Some(" spaced ")),
            ("K=\"a\\tb\\nc\\\"d\\\\e\\qf\"", Some("a\tb\nc\"d\\e\\qf")),
            ("K='a\\'b\\\\c\\nd'", Some("a'b\\c\\nd")),
            ("K=\"multi\nline\"", Some("multi\nline")),
            ("K=\"unterminated", None),
            ("K=\"x\"trailing", None),
            ("'K'=quoted key", Some("quoted key")),
            ("# K=commented out", None),
            ("\u{feff}K=bom", Some("bom")),
            ("K=on\r\nL=2", Some("on")),
        ];
        for (text, want) in cases {
            assert_eq!(one(text, "k").as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn keys_are_case_insensitive_and_later_bindings_win() {
        let text = "ENABLE_COVE=false\nother=1\nENABLE_COVE=true\n";
        assert_eq!(one(text, "enable_cove").as_deref(), Some("true"));
        // Lower-cased in the order first seen: `enable_cove` (second) wins over the
        // re-bound `ENABLE_COVE` (first).
        let text = "ENABLE_COVE=0\nenable_cove=yes\nENABLE_COVE=no\n";
        assert_eq!(one(text, "enable_cove").as_deref(), Some("yes"));
        // A key without `=` unsets it.
        assert_eq!(one("K=1\nK\n", "k"), None);
        assert_eq!(
            values("A=1\nbad line here\nB=2\n=x\nC=3"),
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ],
            "lines that cannot be parsed are skipped"
        );
    }

    #[test]
    fn variables_expand_from_earlier_keys() {
        let text = "ON=true\nK=${ON}\nL=${MISSING:-0.8}\nM=${MISSING}x\nN='${ON}'\nO=${ON:x}";
        let v = parse(text);
        assert_eq!(v["k"], "true");
        assert_eq!(v["l"], "0.8");
        assert_eq!(v["m"], "x");
        assert_eq!(v["n"], "true", "single quotes expand too");
        assert_eq!(v["o"], "${ON:x}");
        assert_eq!(
            parse("K=${on}\nON=1")["k"],
            "",
            "case matters, and only earlier keys"
        );
    }

    #[test]
    fn values_convert_as_pydantic_converts_them() {
        for (s, want) in [
            ("true", Some(true)),
            ("TRUE", Some(true)),
            ("1", Some(true)),
            ("yes", Some(true)),
            ("On", Some(true)),
            ("t", Some(true)),
            ("Y", Some(true)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("no", Some(false)),
            ("off", Some(false)),
            ("f", Some(false)),
            ("n", Some(false)),
            (" true", None),
            ("2", None),
            ("1.0", None),
            ("", None),
            ("enabled", None),
        ] {
            assert_eq!(pydantic_bool(s), want, "{s:?}");
        }
        for (s, want) in [
            ("0.7", Some(0.7)),
            (" 0.7\t", Some(0.7)),
            ("7e-1", Some(0.7)),
            (".5", Some(0.5)),
            ("1", Some(1.0)),
            ("0.5_0", Some(0.5)),
            ("1_0", Some(10.0)),
            ("+0.5", Some(0.5)),
            ("_1", None),
            ("1_", None),
            ("1__0", None),
            ("0,5", None),
            ("", None),
            ("0x1", None),
        ] {
            assert_eq!(pydantic_float(s), want, "{s:?}");
        }
        assert!(pydantic_float("inf").is_some_and(f64::is_infinite));
        assert!(pydantic_float("nan").is_some_and(f64::is_nan));
    }
}
