//! The seed's 26-field quote: its JSON, its hash text and its board row.

use crate::board::{Row, SeedValue};

/// A float as Python's `str()`/`repr()` writes it (what the seed's Redis
/// client stores in hashes): `11.0`, `0.5`, `1e-05`, `1.5e+16`.
pub fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    if (1e-4..1e16).contains(&v.abs()) {
        // Fixed notation: Rust's shortest round-trip digits are Python's.
        let mut s = format!("{v}");
        if !s.contains('.') {
            s.push_str(".0");
        }
        return s;
    }
    let e = format!("{v:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if v < 0.0 { "-" } else { "" };
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    if !(-4..16).contains(&exp) {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let es = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() > int_len {
            format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
        } else {
            format!("{sign}{digits}{}.0", "0".repeat(int_len - digits.len()))
        }
    } else {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    }
}

/// One quote field: its JSON value and its hash (Python `str`) text.
#[derive(Clone)]
pub(crate) enum Field {
    Int(u64),
    Float(f64),
    Text(String),
}

impl Field {
    /// A count the seed receives as a JSON integer (share volumes, free
    /// float, average trade size) and so writes as one (`6878801595`, not
    /// `6878801595.0`): whole values become [`Field::Int`].
    pub(crate) fn whole(v: f64) -> Field {
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
            Field::Int(v as u64)
        } else {
            Field::Float(v)
        }
    }

    fn hash_text(&self) -> String {
        match self {
            Field::Int(i) => i.to_string(),
            Field::Float(f) => py_float(if f.is_finite() { *f } else { 0.0 }),
            Field::Text(s) => s.clone(),
        }
    }

    /// The field as a board shows it: its hash text read back as the seed
    /// does ([`SeedValue::parse`]), without the text round trip where the
    /// result is known (a finite float in `py_float`'s fixed notation reads
    /// back as itself, an integer as itself).
    fn board_json(&self) -> String {
        match self {
            Field::Float(f) if *f == 0.0 || (1e-4..1e16).contains(&f.abs()) => {
                SeedValue::Float(*f).json_text()
            }
            Field::Float(f) if !f.is_finite() => SeedValue::Float(0.0).json_text(),
            Field::Int(i) if i64::try_from(*i).is_ok() => SeedValue::Int(*i as i64).json_text(),
            Field::Text(s) => SeedValue::parse(s).json_text(),
            _ => SeedValue::parse(&self.hash_text()).json_text(),
        }
    }
}

/// A computed quote: the seed's 26 fields in the seed's order.
#[derive(Clone)]
pub(crate) struct QuoteFields(pub(crate) Vec<(&'static str, Field)>);

impl QuoteFields {
    /// The quote as JSON text, fields in the seed's order.
    pub(crate) fn json(&self) -> String {
        let mut out: Vec<u8> = Vec::with_capacity(768);
        out.push(b'{');
        for (n, (k, f)) in self.0.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            let written = match f {
                Field::Int(i) => serde_json::to_writer(&mut out, i),
                Field::Float(x) if x.is_finite() => serde_json::to_writer(&mut out, x),
                Field::Float(_) => serde_json::to_writer(&mut out, &0),
                Field::Text(t) => serde_json::to_writer(&mut out, t),
            };
            debug_assert!(written.is_ok());
        }
        out.push(b'}');
        String::from_utf8(out).unwrap_or_default()
    }
    pub(crate) fn hash(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(k, f)| (k.to_string(), f.hash_text()))
            .collect()
    }
    /// The quote as a board row (what the seed reads back from its hash).
    pub(crate) fn row(&self) -> Row {
        Row::new(
            self.0
                .iter()
                .map(|(k, f)| (k.to_string(), f.board_json()))
                .collect(),
        )
    }
    pub(crate) fn score(&self, field: &str) -> f64 {
        self.0
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, f)| match f {
                Field::Int(i) => *i as f64,
                Field::Float(x) if x.is_finite() => *x,
                _ => 0.0,
            })
            .unwrap_or(0.0)
    }
}
