//! One nesting limit for every JSON document the hub accepts (REST bodies,
//! WebSocket frames): deeply nested data costs the parser stack and breaks
//! typical clients' parsers when it is delivered to them.
//!
//! [`check_depth`] scans the raw text once, before any parsing, without
//! allocating: it counts the objects and arrays open at each point and skips
//! string contents (so brackets inside strings do not count). It does not
//! validate the document; the parser that follows does.

/// The deepest nesting of objects and arrays accepted anywhere: the
/// top-level object of a body or frame is level 1.
pub const MAX_JSON_DEPTH: usize = 64;

/// A document nested deeper than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("JSON nested deeper than {max} levels of objects and arrays")]
pub struct DepthError {
    /// The limit that was exceeded.
    pub max: usize,
}

/// Fails when `raw` opens more than `max` objects or arrays inside one
/// another. Malformed input is not an error here (the parser reports it);
/// only the nesting is checked.
pub fn check_depth(raw: &str, max: usize) -> Result<(), DepthError> {
    check_depth_bytes(raw.as_bytes(), max)
}

/// [`check_depth`] on bytes (a request body not yet known to be UTF-8).
pub fn check_depth_bytes(raw: &[u8], max: usize) -> Result<(), DepthError> {
    let mut depth = 0usize;
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(DepthError { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                // Skip the string: up to the next quote not escaped by a
                // backslash. An escape covers exactly the next byte (`\"`,
                // `\\`, `\u` and its hex digits are harmless).
                while let Some(&c) = bytes.next() {
                    match c {
                        b'"' => break,
                        b'\\' => {
                            bytes.next();
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{DepthError, MAX_JSON_DEPTH, check_depth, check_depth_bytes};

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn depth_up_to_the_limit_passes_and_one_more_fails() {
        assert_eq!(check_depth(&nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH), Ok(()));
        assert_eq!(
            check_depth(&nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH),
            Err(DepthError {
                max: MAX_JSON_DEPTH
            })
        );
        assert!(check_depth(&nested(32_000), MAX_JSON_DEPTH).is_err());
        assert_eq!(check_depth("1", 0), Ok(()));
        assert!(check_depth("{}", 0).is_err());
    }

    #[test]
    fn siblings_do_not_add_up() {
        let wide = format!("[{}]", vec!["{\"a\":[1,[2]]}"; 1000].join(","));
        assert_eq!(check_depth(&wide, 4), Ok(()));
        assert!(check_depth(&wide, 3).is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!(
            r#"{{"a":"{}","b":["{}"]}}"#,
            "[{".repeat(500),
            "]".repeat(9)
        );
        assert_eq!(check_depth(&s, 2), Ok(()));
        // An escaped quote does not end the string; an escaped backslash
        // before a quote does.
        assert_eq!(check_depth(r#"["\"[[[[", 1]"#, 1), Ok(()));
        assert!(check_depth(r#"["\\", [[1]]]"#, 2).is_err());
        assert_eq!(check_depth(r#"["\\", [1]]"#, 2), Ok(()));
        assert_eq!(check_depth(r#"["\u005b[", {"k\"{":1}]"#, 2), Ok(()));
    }

    #[test]
    fn malformed_input_is_left_to_the_parser() {
        assert_eq!(check_depth("]]]]{", 1), Ok(()));
        assert_eq!(check_depth("\"unterminated [[[[", 1), Ok(()));
        assert_eq!(check_depth("[\"trailing backslash\\", 1), Ok(()));
        assert_eq!(check_depth_bytes(b"[\xff\xfe[", 2), Ok(()));
        assert!(check_depth_bytes(b"[\xff[[", 2).is_err());
    }
}
