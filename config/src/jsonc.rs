//! JSON with comments: operators may annotate their config files with `//` line comments and
//! `/* */` block comments. Comments are blanked out byte for byte (newlines are kept), so the line
//! and column serde_json reports for a syntax error still point into the original file.
//!
//! The parse also notices a field given twice in one object, which plain serde_json silently
//! resolves by keeping the last value.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::errors::Problem;

/// Replaces every comment outside strings with spaces, keeping newlines and byte offsets.
///
/// A UTF-8 byte-order mark at the start is blanked too. An unterminated block comment is a problem
/// that names the line and column where it starts.
pub(crate) fn strip_comments(text: &str) -> Result<String, Problem> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    if text.starts_with('\u{feff}') {
        out.extend_from_slice(b"   ");
        i = 3;
    }
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if b == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            if b == b'"' {
                in_string = false;
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            out.push(b);
            i += 1;
        } else if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                out.push(blank(bytes[i]));
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let start = i;
            let Some(len) = find(&bytes[i + 2..], b"*/") else {
                let (line, column) = line_column(text, start);
                return Err(Problem::new(
                    format!("line {line}, column {column}"),
                    "unterminated /* comment",
                ));
            };
            let end = i + 2 + len + 2;
            out.extend(bytes[i..end].iter().map(|&b| blank(b)));
            i = end;
        } else {
            out.push(b);
            i += 1;
        }
    }
    // Only ASCII bytes outside strings were replaced, and always by ASCII spaces, while whole
    // comments (which contain complete characters) were blanked; the result is still UTF-8.
    Ok(String::from_utf8(out).expect("blanking comments keeps UTF-8 intact"))
}

/// Keeps line breaks so that line numbers stay right; everything else in a comment becomes a space.
fn blank(byte: u8) -> u8 {
    if byte == b'\n' || byte == b'\r' {
        byte
    } else {
        b' '
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Parses JSON (comments already stripped) into a value.
///
/// Returns the value and one problem per field that appears twice in the same object, or a single
/// syntax problem located by line and column.
pub(crate) fn parse(text: &str) -> Result<(Value, Vec<Problem>), Problem> {
    let duplicates = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = ValueSeed {
        path: String::new(),
        duplicates: &duplicates,
    };
    let value = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| syntax_problem(text, error))?;
    let problems = duplicates
        .into_inner()
        .into_iter()
        .map(|path| Problem::new(path, "field given more than once"))
        .collect();
    Ok((value, problems))
}

/// Turns a serde_json error into a problem whose path is the line and column.
fn syntax_problem(text: &str, error: serde_json::Error) -> Problem {
    let full = error.to_string();
    // serde_json appends " at line L column C"; the position goes into the path instead.
    let message = match full.rfind(" at line ") {
        Some(at) => &full[..at],
        None => &full,
    };
    let (mut line, mut column) = (error.line(), error.column());
    if column == 0 && line > 1 {
        // serde_json says "column 0" just after reading a line break: the error is at the end of
        // the previous line, which is where an editor should point.
        line -= 1;
        column = text.lines().nth(line - 1).map_or(0, |l| l.chars().count()) + 1;
    }
    Problem::new(
        format!("line {line}, column {column}"),
        format!("invalid JSON: {message}"),
    )
}

/// Builds a `serde_json::Value` like serde_json does, noting the path of every duplicate key.
struct ValueSeed<'a> {
    path: String,
    duplicates: &'a RefCell<Vec<String>>,
}

impl ValueSeed<'_> {
    fn child(&self, path: String) -> Self {
        ValueSeed {
            path,
            duplicates: self.duplicates,
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot spell NaN or infinity, so this never falls back to null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) =
            seq.next_element_seed(self.child(format!("{}[{}]", self.path, items.len())))?
        {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = crate::fields::join(&self.path, &key);
            let value = map.next_value_seed(self.child(path.clone()))?;
            if object.insert(key, value).is_some() {
                self.duplicates.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_become_spaces_but_strings_are_kept() {
        let text = "{\"a\": \"// not a comment\", // comment\n/* block\n */ \"b\": \"/* kept */\"}";
        let stripped = strip_comments(text).unwrap();
        assert_eq!(stripped.len(), text.len());
        assert_eq!(stripped.matches('\n').count(), 2);
        let (value, dups) = parse(&stripped).unwrap();
        assert!(dups.is_empty());
        assert_eq!(value["a"], "// not a comment");
        assert_eq!(value["b"], "/* kept */");
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let text = r#"{"a": "say \"//hi\"" /* c */}"#;
        let (value, _) = parse(&strip_comments(text).unwrap()).unwrap();
        assert_eq!(value["a"], "say \"//hi\"");
    }

    #[test]
    fn syntax_errors_keep_their_line_after_comments() {
        let text = "{\n  // comment\n  /* two\n lines */\n  \"a\": 1,\n}";
        let problem = parse(&strip_comments(text).unwrap()).unwrap_err();
        assert_eq!(problem.path, "line 6, column 1");
        assert!(problem.message.contains("trailing comma"), "{problem}");
    }

    #[test]
    fn unterminated_block_comment_is_located() {
        let problem = strip_comments("{\n  /* oops\n}").unwrap_err();
        assert_eq!(problem.path, "line 2, column 3");
    }

    #[test]
    fn duplicate_fields_are_reported_with_their_path() {
        let (_, dups) = parse(r#"{"a": {"b": 1, "b": 2}, "c": [{"d": 1, "d": 1}]}"#).unwrap();
        let paths: Vec<_> = dups.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["a.b", "c[0].d"]);
    }
}
