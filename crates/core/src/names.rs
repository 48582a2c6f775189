//! Names of functions, projects and buckets: `[a-z0-9][a-z0-9-]{0,62}`.

use crate::Error;

pub const DEFAULT_PROJECT: &str = "default";

/// Validates a name; `what` names the field in the error.
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!(
                "'{}' is not a valid name: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// What [`validate_tag`] accepts, as a regular expression.
pub const TAG_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$";

/// The most tags one function or call may carry.
pub const MAX_TAGS: usize = 16;

/// Validates a concurrency tag: 1 to 64 characters of `a-z`, `A-Z`, `0-9`,
/// `.`, `_`, `:` and `-`, starting with a letter or digit (no commas, which
/// separate tags in a query string, and no `/`: a tag is a path segment of
/// `/v1/limits/{tag}`). [`TAG_PATTERN`] says the same.
pub fn validate_tag(tag: &str) -> Result<(), Error> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "tag",
            format!(
                "'{}' is not a valid tag: use 1 to 64 characters of letters, digits and '._:-', \
                 starting with a letter or digit",
                tag.chars().take(80).collect::<String>()
            ),
        ))
    }
}

/// Validates a list of tags: each valid, none twice, at most [`MAX_TAGS`].
pub fn validate_tags(tags: &[String]) -> Result<(), Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid("tag", format!("more than {MAX_TAGS} tags")));
    }
    for (i, t) in tags.iter().enumerate() {
        validate_tag(t)?;
        if tags[..i].contains(t) {
            return Err(Error::invalid("tag", format!("'{t}' is named twice")));
        }
    }
    Ok(())
}

/// Tags as a query parameter or a column: joined by commas; none is "".
pub fn join_tags(tags: &[String]) -> String {
    tags.join(",")
}

/// The tags of [`join_tags`]' text (not validated).
pub fn split_tags(text: &str) -> Vec<String> {
    text.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_and_round_trip() {
        for good in ["archive", "db:write", "team-a_b.1", &"t".repeat(64)] {
            assert!(validate_tag(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a,b", "a b", "team/a", &"t".repeat(65), "é"] {
            assert!(validate_tag(bad).unwrap_err().to_string().contains("tag"), "{bad}");
        }
        let tags = vec!["a".to_string(), "b".to_string()];
        assert!(validate_tags(&tags).is_ok());
        assert!(validate_tags(&["a".into(), "a".into()]).is_err(), "twice");
        assert_eq!(split_tags(&join_tags(&tags)), tags);
        assert!(split_tags("").is_empty());
    }

    #[test]
    fn accepts_and_rejects() {
        for good in ["a", "hello", "9lives", "a-b-c", &"x".repeat(63)] {
            assert!(validate_name("name", good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a/b", &"x".repeat(64), "é"] {
            let err = validate_name("name", bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid name"), "{err}");
        }
    }
}
