//! The names the broker accepts: queues, groups, topics and patterns. Checked
//! once, before any engine sees them.

use crate::{DEAD_LETTER_SUFFIX, EVENTS_QUEUE_PREFIX, Error, Result};

/// The longest queue or group name.
const MAX_NAME: usize = 101;
/// The longest routing key AMQP carries.
const MAX_TOPIC: usize = 255;

fn invalid(kind: &'static str, name: &str, reason: &'static str) -> Error {
    Error::InvalidName { kind, name: name.chars().take(120).collect(), reason }
}

/// `[a-z0-9][a-z0-9._-]{0,100}`.
fn simple_name(kind: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid(kind, name, "empty"));
    }
    if name.len() > MAX_NAME {
        return Err(invalid(kind, name, "longer than 101 characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(invalid(kind, name, "only lowercase letters, digits, '.', '_' and '-' are allowed"));
    }
    if !name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(invalid(kind, name, "must start with a lowercase letter or a digit"));
    }
    Ok(())
}

/// A work queue name that may be declared: well formed, and not one of the
/// names the broker derives itself.
pub(crate) fn declared_queue(queue: &str) -> Result<()> {
    simple_name("queue", queue)?;
    if queue.ends_with(DEAD_LETTER_SUFFIX) {
        return Err(invalid("queue", queue, "names ending in '.dead' are reserved for dead-letter queues"));
    }
    if queue.starts_with(EVENTS_QUEUE_PREFIX) {
        return Err(invalid("queue", queue, "names starting with 'stratus.events.' are reserved for event groups"));
    }
    Ok(())
}

/// A queue that may be published to or consumed: any well-formed name, or
/// the dead-letter queue of one.
pub(crate) fn queue(queue: &str) -> Result<()> {
    match queue.strip_suffix(DEAD_LETTER_SUFFIX) {
        Some(work) if simple_name("queue", work).is_ok() => Ok(()),
        _ => simple_name("queue", queue),
    }
}

pub(crate) fn group(group: &str) -> Result<()> {
    simple_name("subscription group", group)
}

/// Dot-separated words of ASCII letters, digits, `_` and `-`.
pub(crate) fn topic(topic: &str) -> Result<()> {
    words("event topic", topic, false)
}

/// A topic whose words may also be `*` or `#`.
pub(crate) fn pattern(pattern: &str) -> Result<()> {
    words("topic pattern", pattern, true)
}

fn words(kind: &'static str, text: &str, wildcards: bool) -> Result<()> {
    if text.is_empty() {
        return Err(invalid(kind, text, "empty"));
    }
    if text.len() > MAX_TOPIC {
        return Err(invalid(kind, text, "longer than 255 bytes"));
    }
    for word in text.split('.') {
        if word.is_empty() {
            return Err(invalid(kind, text, "empty word: a leading, trailing or doubled '.'"));
        }
        if wildcards && (word == "*" || word == "#") {
            continue;
        }
        if !word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            let reason = if wildcards {
                "words are letters, digits, '_' and '-', or a whole-word '*' or '#'"
            } else {
                "words are letters, digits, '_' and '-' (no wildcards in a topic)"
            };
            return Err(invalid(kind, text, reason));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        let longest = "a".repeat(101);
        for good in ["a", "0", "work", "pool.default", "p-1_x.y", longest.as_str()] {
            assert!(declared_queue(good).is_ok(), "{good}");
            assert!(queue(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(102);
        for bad in ["", "Work", "-a", ".a", "_a", "a b", "a/b", "é", too_long.as_str()] {
            assert!(declared_queue(bad).is_err(), "{bad:?}");
            assert!(queue(bad).is_err(), "{bad:?}");
        }
        // Derived names are reserved for declare, usable elsewhere.
        let longest_dead = format!("{longest}.dead");
        for derived in ["work.dead", "stratus.events.g", longest_dead.as_str()] {
            assert!(declared_queue(derived).is_err(), "{derived}");
            assert!(queue(derived).is_ok(), "{derived}");
        }
    }

    #[test]
    fn topics_and_patterns() {
        for good in ["a", "invocation.finished", "A.b-c.d_e.1"] {
            assert!(topic(good).is_ok(), "{good}");
            assert!(pattern(good).is_ok(), "{good}");
        }
        for good in ["#", "*", "a.*", "a.#", "*.b.#", "#.done"] {
            assert!(pattern(good).is_ok(), "{good}");
            assert!(topic(good).is_err(), "{good}");
        }
        let long = "a".repeat(256);
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a.b*", "a.#b", "a/b", long.as_str()] {
            assert!(topic(bad).is_err(), "{bad:?}");
            assert!(pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = declared_queue("Work").unwrap_err().to_string();
        assert_eq!(err, "invalid queue 'Work': only lowercase letters, digits, '.', '_' and '-' are allowed");
        let err = pattern("a..b").unwrap_err().to_string();
        assert_eq!(err, "invalid topic pattern 'a..b': empty word: a leading, trailing or doubled '.'");
    }
}
