//! Session tokens: the unguessable path segment under `/play/`, compared in constant time.

use subtle::ConstantTimeEq;

/// A fresh token: 128 random bits from the operating system, as 32 lowercase hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .expect("the OS random source is available on every supported system");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts tokens of 16 to 128 URL-safe characters (`A-Z a-z 0-9 - _`).
pub fn parse_token(s: &str) -> Result<String, String> {
    if !(16..=128).contains(&s.len()) {
        return Err(format!(
            "a token must be 16 to 128 characters long (got {}); 32 random hex digits, as \
             `openssl rand -hex 16` prints, make a good one",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!("a token may hold only A-Z a-z 0-9 - _, not {c:?}"));
    }
    Ok(s.to_owned())
}

/// Compares a presented token with the expected one in time that does not depend on where they
/// differ (only, at most, on the presented length).
pub fn token_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_128_bits_and_distinct() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(parse_token(&a), Ok(a.clone()));
    }

    #[test]
    fn matching() {
        assert!(token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdef", "0123456789abcdeF"));
        assert!(!token_matches("0123456789abcdef", "0123456789abcde"));
        assert!(!token_matches("0123456789abcdef", ""));
    }

    #[test]
    fn bad_tokens() {
        assert!(parse_token("short").is_err());
        assert!(parse_token("has/slash/in/it/0000").is_err());
        assert!(parse_token(&"a".repeat(129)).is_err());
    }
}
