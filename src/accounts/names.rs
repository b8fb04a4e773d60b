//! T2 and K1a: what a team or key name may be. Trimmed, then 1 to `max`
//! Unicode scalar values, no control characters, no bidirectional override
//! or isolate characters, and at least one visible character (not only
//! whitespace or zero-width / format characters).

/// Bidirectional embeddings, overrides and isolates: text that displays in
/// another order than it is stored (U+202A-U+202E, U+2066-U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Format characters (general category Cf, Unicode 15) and the other
/// characters that render as nothing: fillers, joiners, variation selectors.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// The trimmed name when it is acceptable, `None` otherwise.
pub fn valid_name(name: &str, max: usize) -> Option<String> {
    let name = name.trim();
    let n = name.chars().count();
    let ok = n > 0
        && n <= max
        && !name.chars().any(|c| c.is_control() || is_bidi_control(c))
        && name.chars().any(|c| !is_invisible(c));
    ok.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_need_a_visible_character_and_no_bidi_controls() {
        assert_eq!(valid_name("  Ops  ", 48).as_deref(), Some("Ops"));
        assert!(valid_name("Ops 🚀", 48).is_some());
        assert!(valid_name("Équipe\u{200D}", 48).is_some());
        assert!(valid_name("\u{200B}\u{200C}\u{200D}", 48).is_none());
        assert!(valid_name("\u{2060}\u{FEFF} \u{3000}", 48).is_none());
        assert!(valid_name("abc\u{202E}gpj.exe", 48).is_none());
        assert!(valid_name("a\u{2067}b", 48).is_none());
        assert!(valid_name("a\u{7}b", 48).is_none());
        assert!(valid_name(&"é".repeat(64), 64).is_some());
        assert!(valid_name(&"é".repeat(65), 64).is_none());
    }
}
