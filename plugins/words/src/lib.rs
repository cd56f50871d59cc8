//! Flat-map stage: `{"text": "Hello, world!"}` becomes `{"word": "hello"}`
//! and `{"word": "world"}`.

use wasmpipe_sdk::prelude::*;

#[derive(Deserialize)]
struct Line {
    text: String,
}

#[derive(Serialize, Debug, PartialEq)]
struct Word {
    word: String,
}

/// Words are split at whitespace and punctuation, except apostrophes inside a
/// word, so that "don't" stays one word.
#[flat_map]
fn words(line: Line) -> Vec<Word> {
    line.text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(|w| Word {
            word: w.to_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        words(Line { text: text.into() })
            .into_iter()
            .map(|w| w.word)
            .collect()
    }

    #[test]
    fn splits_and_lowercases() {
        assert_eq!(
            split("Hello, world!  Don't 'panic'\n42x"),
            ["hello", "world", "don't", "panic", "42x"]
        );
        assert!(split(" ... ").is_empty());
    }
}
