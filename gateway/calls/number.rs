//! Dialled numbers: normalization to E.164 (ITU-T E.164, as carriers send
//! them in many national forms). How numbers are shown is
//! [`crate::number`]'s one policy.

/// Normalizes a dialled number: visual separators (`-`, `.`, `(`, `)`,
/// space) removed; `00` international prefix and national `0` trunk
/// prefix rewritten to `+` with the trunk's country code. Names such as
/// `echo` are returned unchanged.
pub fn normalize(user: &str, country_code: Option<&str>) -> String {
    let digits: String = user
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = digits.strip_prefix('+') {
        if all_digits(rest) {
            return digits;
        }
    } else if let Some(rest) = digits.strip_prefix("00") {
        if all_digits(rest) {
            return format!("+{rest}");
        }
    } else if let (Some(rest), Some(cc)) = (digits.strip_prefix('0'), country_code) {
        if all_digits(rest) {
            return format!("+{cc}{rest}");
        }
    }
    if all_digits(&digits) || digits.starts_with('+') {
        digits
    } else {
        user.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_and_international_forms_become_e164() {
        assert_eq!(normalize("020 7183 8750", Some("44")), "+442071838750");
        assert_eq!(normalize("00442071838750", Some("44")), "+442071838750");
        assert_eq!(normalize("+44-20-7183-8750", None), "+442071838750");
        assert_eq!(normalize("(020) 7183.8750", None), "02071838750");
        assert_eq!(normalize("echo", Some("44")), "echo");
        assert_eq!(normalize("2071838750", Some("44")), "2071838750");
    }
}
