//! A JSON document that borrows its strings from the input line, for validation: one parse
//! with no allocation per key or unescaped string, objects as sorted vectors (looked up by binary
//! search), and canonical bytes written straight from it.
//! Invariant: `Val::write_canonical` gives exactly the bytes `serde_json::to_vec` gives for the
//! same input parsed as a `serde_json::Value` (keys in byte order, a repeated key keeps its last
//! value, serde_json's number and escape spelling), so stored records stay byte-identical to
//! those written before this module existed. A property test checks it against serde_json.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// One JSON value; strings borrow from the input unless they held escapes.
#[derive(Debug, PartialEq)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Arr(Vec<Val<'a>>),
    Obj(Obj<'a>),
}

/// An object's members sorted by key bytes, each key once; beside them, each key's first eight
/// bytes as a big-endian word (in the same order), so a look-up searches a dense array of words
/// and compares whole keys only among those sharing their first eight bytes (validation looks
/// up some forty fields per record: this was its largest single cost).
#[derive(Debug, PartialEq, Default)]
pub struct Obj<'a>(Vec<(Cow<'a, str>, Val<'a>)>, Vec<u64>);

/// Eight bytes of `s` from `at`, zero-padded past its end, as a big-endian word.
#[inline]
pub(super) fn word(s: &[u8], at: usize) -> u64 {
    let rest = s.get(at..).unwrap_or(&[]);
    if let Some(w) = rest.first_chunk::<8>() {
        return u64::from_be_bytes(*w);
    }
    let mut w = 0u64;
    for (i, b) in rest.iter().enumerate() {
        w |= u64::from(*b) << (56 - 8 * i);
    }
    w
}

/// The byte order of two keys (what `str::cmp` gives), compared eight bytes at a time as
/// big-endian words rather than by a `memcmp` call per comparison: validation compares short
/// keys several hundred times per record (the sort, then every field it looks up). Where the
/// padded words are equal, the shorter key is a prefix of the longer, so length decides.
#[inline]
pub(super) fn key_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let mut at = 0;
    loop {
        let (wa, wb) = (word(a, at), word(b, at));
        if wa != wb {
            return wa.cmp(&wb);
        }
        at += 8;
        if a.len() <= at || b.len() <= at {
            return a.len().cmp(&b.len());
        }
    }
}

impl<'a> Obj<'a> {
    fn from_members(mut members: Vec<(Cow<'a, str>, Val<'a>)>) -> Self {
        members.sort_by(|a, b| key_cmp(a.0.as_bytes(), b.0.as_bytes()));
        // `dedup_by` hands (later, kept): moving the later value into the kept slot makes the
        // last occurrence win, as `serde_json::Map::insert` does.
        members.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(&mut later.1, &mut kept.1);
                true
            } else {
                false
            }
        });
        let words = members.iter().map(|(k, _)| word(k.as_bytes(), 0)).collect();
        Obj(members, words)
    }

    fn position(&self, key: &str) -> Option<usize> {
        let w = word(key.as_bytes(), 0);
        let from = self.1.partition_point(|x| *x < w);
        let run = self.1[from..].iter().take_while(|x| **x == w).count();
        self.0[from..from + run]
            .iter()
            .position(|(k, _)| k.as_bytes() == key.as_bytes())
            .map(|i| from + i)
    }

    pub fn get(&self, key: &str) -> Option<&Val<'a>> {
        self.position(key).map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Val<'a>> {
        self.position(key).map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Members in key order.
    /// Whether no member is named in `sorted` (names in byte order): one merge walk over
    /// both lists instead of a search per name.
    pub fn has_none_of(&self, sorted: &[&str]) -> bool {
        debug_assert!(sorted
            .windows(2)
            .all(|w| key_cmp(w[0].as_bytes(), w[1].as_bytes()).is_lt()));
        let (mut i, mut j) = (0, 0);
        while let (Some((k, _)), Some(name)) = (self.0.get(i), sorted.get(j)) {
            match key_cmp(k.as_bytes(), name.as_bytes()) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => return false,
            }
        }
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Val<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    fn write_canonical(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, k)?;
            out.push(b':');
            v.write_canonical(out)?;
        }
        out.push(b'}');
        Ok(())
    }

    /// The canonical bytes of this object.
    pub fn to_canonical(&self) -> serde_json::Result<Vec<u8>> {
        // Canonical records are about as long as their input; 1 KiB avoids most regrowth.
        let mut out = Vec::with_capacity(1024);
        self.write_canonical(&mut out)?;
        Ok(out)
    }
}

impl<'a> Val<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Val<'a>]> {
        match self {
            Val::Arr(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Obj<'a>> {
        match self {
            Val::Obj(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Val::Num(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Num(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn is_boolean(&self) -> bool {
        matches!(self, Val::Bool(_))
    }

    fn write_canonical(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Val::Null => out.extend_from_slice(b"null"),
            Val::Bool(true) => out.extend_from_slice(b"true"),
            Val::Bool(false) => out.extend_from_slice(b"false"),
            Val::Num(n) => serde_json::to_writer(&mut *out, n)?,
            Val::Str(s) => write_str(out, s)?,
            Val::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out)?;
                }
                out.push(b']');
            }
            Val::Obj(o) => o.write_canonical(out)?,
        }
        Ok(())
    }
}

/// A string as serde_json writes it: as it is, between quotes, unless it holds a byte serde_json
/// escapes (a quote, a backslash, a control byte below 0x20), which serde_json then writes.
fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    let escaped = bytes8::any(
        s.as_bytes(),
        |w| bytes8::any_below(w, 0x20) || bytes8::any_is(w, b'"') || bytes8::any_is(w, b'\\'),
        |b| b < 0x20 || b == b'"' || b == b'\\',
    );
    if escaped {
        return serde_json::to_writer(&mut *out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Byte tests on eight bytes at once (a word), exact as to whether any byte matches: validation
/// scans every string of every record for control characters and for escapes, and a test per
/// byte was a sixth of its instructions.
pub(super) mod bytes8 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;

    /// Whether a byte of `w` is below `n` (`n` at most 0x80).
    #[inline]
    pub fn any_below(w: u64, n: u8) -> bool {
        w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS != 0
    }

    /// Whether a byte of `w` is `c`.
    #[inline]
    pub fn any_is(w: u64, c: u8) -> bool {
        any_below(w ^ (ONES * u64::from(c)), 1)
    }

    /// Whether any byte of `s` is a hit: `word_hit` tests eight bytes at once, `byte_hit` the
    /// bytes past the last whole word, and both must say the same of the same bytes.
    #[inline]
    pub fn any(s: &[u8], word_hit: impl Fn(u64) -> bool, byte_hit: impl Fn(u8) -> bool) -> bool {
        let mut words = s.chunks_exact(8);
        for w in &mut words {
            if word_hit(u64::from_le_bytes(w.try_into().expect("eight bytes"))) {
                return true;
            }
        }
        words.remainder().iter().any(|&b| byte_hit(b))
    }
}

/// Parses one JSON text (serde_json's grammar, errors and nesting limit).
pub fn parse(bytes: &[u8]) -> serde_json::Result<Val<'_>> {
    serde_json::from_slice(bytes)
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Val<'de>, E> {
        Ok(Val::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::Num(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(Val::Num(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Val<'de>, E> {
        // As serde_json's own Value: a non-finite float (which JSON cannot spell) becomes null.
        Ok(Number::from_f64(v).map_or(Val::Null, Val::Num))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_none<E>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        Deserialize::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Val::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        // A record has about 30 fields; start there rather than growing five times.
        let mut members = Vec::with_capacity(32);
        while let Some(Key(k)) = map.next_key()? {
            members.push((k, map.next_value()?));
        }
        Ok(Val::Obj(Obj::from_members(members)))
    }
}

impl<'de> Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

/// A member name, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// What serde_json itself makes of the same text: the reference for canonical bytes.
    fn reference(text: &[u8]) -> Option<Vec<u8>> {
        serde_json::from_slice::<Value>(text)
            .ok()
            .map(|v| serde_json::to_vec(&v).expect("serialises"))
    }

    fn ours(text: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        parse(text).ok()?.write_canonical(&mut out).expect("writes");
        Some(out)
    }

    #[test]
    fn canonical_bytes_match_serde_json_on_edge_cases() {
        let cases: &[&str] = &[
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2,"b":{"z":[1,2,{"y":null,"x":true}],"a":"\u00e9\n\"\\/"}}"#,
            r#"{"a\u0000b":"x","\u00e9":"é","é":"second"}"#,
            r#"{"n":[0,-0,1e3,1.5e-7,-12,18446744073709551615,18446744073709551616,-9223372036854775808,1.0,0.1]}"#,
            r#" { "spaces" : [ ] , "obj" : { } } "#,
            r#"[1,"two",{"b":2,"a":1}]"#,
            r#""just a string""#,
            "{\"\u{7f}\":\"\u{1f600}\\ud83d\\ude00\"}",
        ];
        for case in cases {
            assert_eq!(ours(case.as_bytes()), reference(case.as_bytes()), "{case}");
        }
        // serde_json's own grammar decides what is refused, and where.
        for bad in [
            &b"{\"a\":}"[..],
            b"{\"a\":1,}",
            b"\xff",
            b"{\"a\":\"\xc3\"}",
            b"1 2",
            b"{} x",
        ] {
            let (a, b) = (parse(bad).map(|_| ()), serde_json::from_slice::<Value>(bad).map(|_| ()));
            assert_eq!(a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()));
        }
    }

    #[test]
    fn the_last_of_repeated_keys_wins_and_lookups_find_every_key() {
        let v = parse(br#"{"k":1,"c":0,"k":2,"a":9,"k":3}"#).expect("valid");
        let o = v.as_object().expect("object");
        assert_eq!(o.len(), 3);
        assert_eq!(o.get("k").and_then(Val::as_u64), Some(3));
        assert_eq!(o.keys().collect::<Vec<_>>(), ["a", "c", "k"]);
        assert!(o.get("b").is_none() && !o.contains_key("z"));
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
            "[a-c\\n\"\\\\\\u{0}-\\u{1f}é]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-d]{0,2}|\\PC{0,3}", inner), 0..8)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    /// Renders members in a shuffled order, with repeats, so sorting and "last wins" are exercised.
    fn shuffled_text(v: &Value, seed: u64) -> String {
        match v {
            Value::Object(m) => {
                let mut members: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), shuffled_text(v, seed.rotate_left(7))))
                    .collect();
                members.sort_by_key(|s| (s.len() as u64).wrapping_mul(seed | 1) % 97);
                if let Some((k, _)) = m.iter().next().filter(|_| seed.is_multiple_of(3)) {
                    // A repeat first, so the real value (which comes later) must win.
                    members.insert(0, format!("{}:\"overwritten\"", Value::String(k.clone())));
                }
                format!("{{ {} }}", members.join(" , "))
            }
            Value::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| shuffled_text(i, seed))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => other.to_string(),
        }
    }

    proptest! {
        /// Word-wise comparison is byte order, for keys sharing long prefixes, holding NULs
        /// and high bytes, of every length around the word size.
        #[test]
        fn key_cmp_is_byte_order(
            prefix in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..20),
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..12),
        ) {
            let a = [prefix.clone(), a].concat();
            let b = [prefix, b].concat();
            prop_assert_eq!(key_cmp(&a, &b), a.cmp(&b));
            prop_assert_eq!(key_cmp(&b, &a), b.cmp(&a));
            prop_assert_eq!(key_cmp(&a, &a), std::cmp::Ordering::Equal);
        }

        /// Every key is found, and nothing else, whatever prefixes the keys share.
        #[test]
        fn lookups_find_exactly_the_keys_present(
            keys in proptest::collection::btree_set("(subject_|abcdefgh|a)[a-c_]{0,10}", 0..24),
            probes in proptest::collection::vec("(subject_|abcdefgh|a)[a-c_]{0,10}", 0..24),
        ) {
            let text = serde_json::to_string(&keys.iter().map(|k| (k.clone(), Value::from(k.len()))).collect::<serde_json::Map<String, Value>>())
                .expect("serialises");
            let v = parse(text.as_bytes()).expect("valid");
            let o = v.as_object().expect("object");
            for k in keys.iter().chain(&probes) {
                prop_assert_eq!(o.get(k).and_then(Val::as_u64), keys.contains(k).then_some(k.len() as u64), "{}", k);
            }
        }

        /// The word tests say what a test per byte says, of any eight bytes.
        #[test]
        fn word_tests_agree_with_byte_tests(w in proptest::collection::vec(prop_oneof![any::<u8>(), Just(0u8), Just(0x1f), Just(0x20), Just(b'"'), Just(b'\\'), Just(0x7f), Just(0xc2), Just(0x80)], 8), n in 1u8..=0x80, c in any::<u8>()) {
            let word = u64::from_le_bytes(w.clone().try_into().expect("eight bytes"));
            prop_assert_eq!(bytes8::any_below(word, n), w.iter().any(|b| *b < n));
            prop_assert_eq!(bytes8::any_is(word, c), w.contains(&c));
            for b in &w {
                prop_assert!(bytes8::any_is(word, *b));
            }
        }

        /// The merge walk agrees with a search per name.
        #[test]
        fn has_none_of_equals_a_search_per_name(
            keys in proptest::collection::vec("[a-d]{0,3}", 0..10),
            names in proptest::collection::btree_set("[a-d]{0,3}", 0..6),
        ) {
            let text = serde_json::to_string(&keys.iter().map(|k| (k.clone(), Value::from(0))).collect::<serde_json::Map<String, Value>>())
                .expect("serialises");
            let v = parse(text.as_bytes()).expect("valid");
            let o = v.as_object().expect("object");
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            prop_assert_eq!(o.has_none_of(&names), !names.iter().any(|n| o.contains_key(n)));
        }

        #[test]
        fn canonical_bytes_equal_serde_json_for_any_document(v in arbitrary_json(), seed in any::<u64>()) {
            let text = shuffled_text(&v, seed);
            prop_assert_eq!(ours(text.as_bytes()), reference(text.as_bytes()), "{}", text);
        }
    }
}
