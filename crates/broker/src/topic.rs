//! AMQP topic matching, for the in-process engine (RabbitMQ does its own).

/// Whether `topic` matches `pattern`: both are `.`-separated words; in the
/// pattern `*` stands for exactly one word and `#` for zero or more.
pub(crate) fn matches(pattern: &str, topic: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    words_match(&pattern, &topic)
}

fn words_match(pattern: &[&str], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        // Consecutive `#`s match what one does; skipping them keeps the
        // search linear in the number of `#`s.
        Some((&"#", [next, ..])) if *next == "#" => words_match(&pattern[1..], topic),
        Some((&"#", rest)) => (0..=topic.len()).any(|skip| words_match(rest, &topic[skip..])),
        Some((&"*", rest)) => !topic.is_empty() && words_match(rest, &topic[1..]),
        Some((word, rest)) => topic.first() == Some(word) && words_match(rest, &topic[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn exact_words() {
        assert!(matches("a", "a"));
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.c"));
        assert!(!matches("ab", "a.b"));
    }

    #[test]
    fn star_is_one_word() {
        assert!(matches("*", "a"));
        assert!(!matches("*", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("*.b.*", "a.b.c"));
        assert!(!matches("*.b.*", "a.c.c"));
        assert!(matches("*.*", "x.y"));
    }

    #[test]
    fn hash_is_zero_or_more_words() {
        assert!(matches("#", "a"));
        assert!(matches("#", "a.b.c"));
        assert!(matches("a.#", "a"));
        assert!(matches("a.#", "a.b"));
        assert!(matches("a.#", "a.b.c"));
        assert!(!matches("a.#", "b.a"));
        assert!(matches("#.done", "done"));
        assert!(matches("#.done", "task.x.done"));
        assert!(!matches("#.done", "task.done.late"));
        assert!(matches("a.#.z", "a.z"));
        assert!(matches("a.#.z", "a.b.c.z"));
        assert!(!matches("a.#.z", "a.b.c"));
        assert!(matches("#.#", "a"));
        assert!(matches("a.#.#.b", "a.x.y.b"));
        assert!(matches("#.*", "a.b"));
        assert!(!matches("a.#.*", "a"));
        assert!(matches("a.#.*", "a.b"));
    }
}
