//! GB 11643 resident ID numbers (18 characters). The value is personal data: nothing here
//! formats it into a message, and callers must not either.

use super::region::Region;
use super::RejectReason;

/// Weights for positions 1–17: 2^(18-i) mod 11.
pub const RESIDENT_ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_MAP: &[u8; 11] = b"10X98765432";

/// Residence permits for Hong Kong, Macao and Taiwan residents use these address prefixes with
/// the same algorithm (STANDARDS §2.1), so a record about such a person is legal.
pub const EXTRA_ADDRESS_PREFIXES: [&str; 3] = ["810000", "820000", "830000"];

/// Birth years before this are treated as typing errors; 1880 appears in the standard's own
/// example, so the bound is generous.
const BIRTH_YEAR_MIN: i32 = 1800;

/// The check character for 17 ASCII digits, or `None` if the input is not that.
pub fn resident_id_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17
        .bytes()
        .zip(RESIDENT_ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(char::from(CHECK_MAP[(sum % 11) as usize]))
}

pub fn check_resident_id(s: &str) -> Result<(), RejectReason> {
    let format_ok = s.len() == 18
        && s.as_bytes()[..17].iter().all(u8::is_ascii_digit)
        && (s.as_bytes()[17].is_ascii_digit() || s.as_bytes()[17] == b'X');
    if !format_ok {
        return Err(RejectReason::IdInvalidFormat);
    }
    // Only ASCII from here on.
    let prefix = format!("{}0000", &s[..2]);
    if Region::parse(&prefix).is_err() && !EXTRA_ADDRESS_PREFIXES.contains(&prefix.as_str()) {
        return Err(RejectReason::IdInvalidFormat);
    }
    match super::validate::parse_compact_date(&s[6..14]) {
        Some(birth) if birth.year() >= BIRTH_YEAR_MIN => {}
        _ => return Err(RejectReason::IdInvalidFormat),
    }
    if resident_id_check_char(&s[..17]) != s[17..].chars().next() {
        return Err(RejectReason::IdBadCheckDigit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_and_worked_examples_match_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("record-schema.json")).expect("schema parses");
        let rules = &schema["resident_id"];
        assert_eq!(rules["weights"], serde_json::json!(RESIDENT_ID_WEIGHTS));
        assert_eq!(rules["check_map"], "10X98765432");
        assert_eq!(
            rules["extra_address_prefixes_allowed"],
            serde_json::json!(EXTRA_ADDRESS_PREFIXES)
        );
        let valid = schema["worked_examples"]["resident_id_valid"].as_array().expect("list");
        assert_eq!(valid.len(), 3);
        for id in valid {
            assert_eq!(check_resident_id(id.as_str().expect("string")), Ok(()));
        }
    }

    #[test]
    fn rejections() {
        use RejectReason::{IdBadCheckDigit as Check, IdInvalidFormat as Format};
        let cases = [
            ("110105194912310021", Check),  // STANDARDS §2.1: should end in X
            ("11010519491231002x", Format), // lower-case x
            ("11010519491231002", Format),
            ("11010519491231002XX", Format),
            ("1101051949123100２X", Format), // full-width digit
            ("990105194912310020", Format),  // unknown province
            ("110105194913310020", Format),  // month 13
            ("110105194902300020", Format),  // 30 February
            ("110105170001010020", Format),  // before 1800
        ];
        for (id, reason) in cases {
            assert_eq!(check_resident_id(id), Err(reason), "case {id}");
        }
    }

    #[test]
    fn hong_kong_macao_taiwan_permits_are_accepted() {
        for prefix in EXTRA_ADDRESS_PREFIXES {
            let first17 = format!("{prefix}19900101001");
            let id = format!("{first17}{}", resident_id_check_char(&first17).expect("digits"));
            assert_eq!(check_resident_id(&id), Ok(()));
        }
        assert_eq!(resident_id_check_char("1101051949123100"), None);
        assert_eq!(resident_id_check_char("1101051949123100A"), None);
    }
}
