//! GB 32100 Unified Social Credit Code checks. `check_uscc` is the standard's rule, nothing
//! more: 18 symbols from the 31-symbol set, digits in positions 3–8, a participating province
//! prefix and a mod-31 check character. It never normalises (lower case is an error).

use super::region::Region;
use super::RejectReason;

/// The 31 symbols; a symbol's value is its index (I, O, S, V and Z are excluded).
pub const USCC_CHARSET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Weights for positions 1–17: 3^(i-1) mod 31.
pub const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// Real codes from the early Xiamen/Fuzhou pilot that fail the mod-31 check yet were lawfully
/// issued (STANDARDS §1.4). `check_uscc` still reports them as `uscc_bad_check_digit`, as the
/// schema's worked examples demand; record validation accepts them through
/// `is_legacy_pilot_uscc` so that such subjects are not silently dropped.
pub const LEGACY_PILOT_USCCS: [&str; 3] = ["91350100M0001TGQXM", "91350211M0000XUF46", "91350203M0001FUE2P"];

pub fn is_legacy_pilot_uscc(s: &str) -> bool {
    LEGACY_PILOT_USCCS.contains(&s)
}

/// A symbol's value by its ASCII code (`NOT_A_SYMBOL` for every other byte): the check runs
/// for every record and every stored entry the view indexes, so no search per character.
const SYMBOL_VALUES: [u8; 128] = {
    let mut table = [NOT_A_SYMBOL; 128];
    let set = USCC_CHARSET.as_bytes();
    let mut i = 0;
    while i < set.len() {
        table[set[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_A_SYMBOL: u8 = u8::MAX;

fn symbol_value(c: char) -> Option<u32> {
    let v = *SYMBOL_VALUES.get(c as usize)?;
    (v != NOT_A_SYMBOL).then_some(u32::from(v))
}

/// The check character for the first 17 symbols, or `None` if they are not 17 charset symbols.
pub fn uscc_check_char(first17: &str) -> Option<char> {
    // 17 charset symbols are 17 bytes; any other length cannot be (a non-ASCII char fails the
    // lookup below).
    if first17.len() != 17 {
        return None;
    }
    let sum = first17
        .bytes()
        .zip(USCC_WEIGHTS)
        .try_fold(0, |sum, (c, w)| Some(sum + symbol_value(char::from(c))? * w))?;
    Some(char::from(USCC_CHARSET.as_bytes()[((31 - sum % 31) % 31) as usize]))
}

pub fn check_uscc(s: &str) -> Result<(), RejectReason> {
    if s.chars().count() != 18 {
        return Err(RejectReason::UsccWrongLength);
    }
    let charset_ok = s.chars().enumerate().all(|(i, c)| {
        if (2..8).contains(&i) {
            c.is_ascii_digit()
        } else {
            symbol_value(c).is_some()
        }
    });
    if !charset_ok {
        return Err(RejectReason::UsccInvalidCharset);
    }
    // All 18 symbols are ASCII from here on, so byte slicing is safe.
    let b = s.as_bytes();
    let province = u32::from(b[2] - b'0') * 100_000 + u32::from(b[3] - b'0') * 10_000;
    if !Region::is_province_code(province) {
        return Err(RejectReason::UsccUnknownProvince);
    }
    if uscc_check_char(&s[..17]) != s[17..].chars().next() {
        return Err(RejectReason::UsccBadCheckDigit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> serde_json::Value {
        serde_json::from_str(include_str!("record-schema.json")).expect("schema parses")
    }

    #[test]
    fn constants_match_schema() {
        let s = schema();
        assert_eq!(s["uscc"]["charset"], USCC_CHARSET);
        assert_eq!(s["uscc"]["weights"], serde_json::json!(USCC_WEIGHTS));
        for (i, w) in USCC_WEIGHTS.iter().enumerate() {
            assert_eq!(*w, 3u32.pow(i as u32) % 31);
        }
    }

    #[test]
    fn schema_worked_examples() {
        let s = schema();
        let valid = s["worked_examples"]["uscc_valid"].as_array().expect("list");
        assert_eq!(valid.len(), 6);
        for code in valid {
            let code = code.as_str().expect("string");
            assert_eq!(check_uscc(code), Ok(()), "{code}");
            assert_eq!(uscc_check_char(&code[..17]), code.chars().last());
        }
        let expected = [
            ("91110000600037341N", RejectReason::UsccBadCheckDigit),
            ("9111000060003734", RejectReason::UsccWrongLength),
            ("91110000600037341LL", RejectReason::UsccWrongLength),
            ("9111000060003IOZSV", RejectReason::UsccInvalidCharset),
            ("91990000600037341L", RejectReason::UsccUnknownProvince),
            ("91350100M0001TGQXM", RejectReason::UsccBadCheckDigit),
        ];
        let invalid: Vec<&str> = s["worked_examples"]["uscc_invalid"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(invalid, expected.map(|e| e.0));
        for (code, reason) in expected {
            assert_eq!(check_uscc(code), Err(reason), "{code}");
        }
    }

    #[test]
    fn edge_cases() {
        // Lower case, full-width digits and masked codes are rejected, never normalised.
        assert_eq!(check_uscc("91110000600037341l"), Err(RejectReason::UsccInvalidCharset));
        assert_eq!(check_uscc("９1110000600037341L"), Err(RejectReason::UsccInvalidCharset));
        assert_eq!(check_uscc("911101******92690J"), Err(RejectReason::UsccInvalidCharset));
        // Positions 3–8 must be digits even though letters are in the charset.
        assert_eq!(check_uscc("911A0000600037341L"), Err(RejectReason::UsccInvalidCharset));
        // Authority codes A, N and Y are legal in position 1 (python-stdnum wrongly rejects them).
        let first17 = "A1110000600037341";
        let code = format!("{first17}{}", uscc_check_char(first17).expect("charset"));
        assert_eq!(check_uscc(&code), Ok(()));
        // Hong Kong is not a participant, so its prefix is unknown.
        assert_eq!(check_uscc("91810000600037341L"), Err(RejectReason::UsccUnknownProvince));
        assert_eq!(check_uscc(""), Err(RejectReason::UsccWrongLength));
        assert_eq!(uscc_check_char("9111000060003734"), None);
        assert_eq!(uscc_check_char("911100006000373411"), None);
        assert_eq!(uscc_check_char("9111000060003734I"), None);
    }

    /// The check character as the standard states it, with no table and no byte tricks.
    fn reference_check_char(first17: &[char]) -> Option<char> {
        let symbol = |c: char| USCC_CHARSET.chars().position(|x| x == c);
        if first17.len() != 17 {
            return None;
        }
        let mut sum = 0;
        for (i, c) in first17.iter().enumerate() {
            sum += symbol(*c)? * 3usize.pow(i as u32) % 31;
        }
        USCC_CHARSET.chars().nth((31 - sum % 31) % 31)
    }

    /// The whole rule as the standard states it.
    fn reference(s: &str) -> Result<(), RejectReason> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != 18 {
            return Err(RejectReason::UsccWrongLength);
        }
        for (i, c) in chars.iter().enumerate() {
            let ok = if (2..8).contains(&i) {
                c.is_ascii_digit()
            } else {
                USCC_CHARSET.contains(*c)
            };
            if !ok {
                return Err(RejectReason::UsccInvalidCharset);
            }
        }
        if Region::parse(&format!("{}{}0000", chars[2], chars[3])).is_err() {
            return Err(RejectReason::UsccUnknownProvince);
        }
        if reference_check_char(&chars[..17]) != Some(chars[17]) {
            return Err(RejectReason::UsccBadCheckDigit);
        }
        Ok(())
    }

    /// A charset symbol mostly, sometimes a look-alike that is not one.
    fn symbol() -> impl proptest::strategy::Strategy<Value = char> {
        proptest::prop_oneof![
            40 => proptest::sample::select(USCC_CHARSET.chars().collect::<Vec<_>>()),
            1 => proptest::sample::select("IOSVZa９é\u{0}".chars().collect::<Vec<_>>()),
        ]
    }

    proptest::proptest! {
        /// The table-driven check gives the reference's verdict on any string near a code:
        /// valid ones (the right check character appended), wrong symbols, wrong lengths,
        /// non-ASCII look-alikes.
        #[test]
        fn check_equals_the_reference_rule(
            head in proptest::collection::vec(symbol(), 2),
            province in proptest::sample::select(vec!["11", "33", "35", "44", "65", "81", "99", "10", "3A"]),
            digits in proptest::collection::vec(proptest::prop_oneof![
                20 => proptest::char::range('0', '9'), 1 => symbol()], 4),
            tail in proptest::collection::vec(symbol(), 9..13),
            append_check in proptest::bool::weighted(0.8),
        ) {
            let mut chars = head;
            chars.extend(province.chars());
            chars.extend(digits);
            chars.extend(tail);
            let first17: String = chars.iter().take(17).collect();
            proptest::prop_assert_eq!(uscc_check_char(&first17), reference_check_char(&first17.chars().collect::<Vec<_>>()));
            if append_check && chars.len() == 17 {
                if let Some(c) = reference_check_char(&chars) {
                    chars.push(c);
                }
            }
            let code: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(check_uscc(&code), reference(&code), "{}", code);
        }
    }

    #[test]
    fn pilot_codes_fail_the_check_with_documented_check_chars() {
        for (code, computed) in LEGACY_PILOT_USCCS.iter().zip(['1', 'R', 'J']) {
            assert!(is_legacy_pilot_uscc(code));
            assert_eq!(check_uscc(code), Err(RejectReason::UsccBadCheckDigit));
            assert_eq!(uscc_check_char(&code[..17]), Some(computed));
        }
    }
}
