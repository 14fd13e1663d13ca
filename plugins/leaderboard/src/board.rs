//! Board rows written straight to JSON text.
//!
//! The seed builds each board entry as a dict: `rank`, `symbol` and the
//! board's score field, then every field of the symbol's `symbol:{SYM}:data`
//! hash over them, each hash value read back as a number when it looks like
//! one. The boards are published with the keys sorted. A [`Row`] is one
//! symbol's hash in that form, kept as sorted JSON members, so a board of 500
//! entries is a merge of short sorted lists and a few copies: no JSON tree per
//! entry, and a symbol's row is built once for all three boards.

use serde_json::{Number, Value, json};

/// A hash value read back as the seed does when building boards: a string
/// containing `.` becomes a float, else an integer, else it stays a string.
#[derive(Debug, Clone, PartialEq)]
pub enum SeedValue<'a> {
    /// Text with a `.` that parses as a finite float.
    Float(f64),
    /// Text without a `.` that parses as an integer.
    Int(i64),
    /// Anything else, kept as text.
    Text(&'a str),
}

impl<'a> SeedValue<'a> {
    /// Read `text` as the seed's board builder does.
    pub fn parse(text: &'a str) -> SeedValue<'a> {
        if text.contains('.') {
            if let Ok(f) = text.trim().parse::<f64>()
                && f.is_finite()
            {
                return SeedValue::Float(f);
            }
        } else if let Ok(i) = text.trim().parse::<i64>() {
            return SeedValue::Int(i);
        }
        SeedValue::Text(text)
    }

    /// The value as JSON text.
    pub fn json_text(&self) -> String {
        let mut out = Vec::with_capacity(24);
        self.write(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn write(&self, out: &mut Vec<u8>) {
        let written = match self {
            SeedValue::Float(f) => serde_json::to_writer(&mut *out, f),
            SeedValue::Int(i) => serde_json::to_writer(&mut *out, i),
            SeedValue::Text(t) => serde_json::to_writer(&mut *out, t),
        };
        debug_assert!(written.is_ok());
    }
}

/// [`SeedValue::parse`] as a JSON value.
pub fn seed_value(text: &str) -> Value {
    match SeedValue::parse(text) {
        SeedValue::Float(f) => Number::from_f64(f).map_or(json!(0), Value::Number),
        SeedValue::Int(i) => json!(i),
        SeedValue::Text(t) => Value::String(t.to_string()),
    }
}

/// One symbol's hash as board JSON members (key, JSON text), sorted by key;
/// for a repeated field the last value wins, as in the seed's dict.
#[derive(Debug, Clone, Default)]
pub struct Row(Vec<(String, String)>);

impl Row {
    /// A row from `(field, JSON text)` pairs in hash order.
    pub fn new(mut members: Vec<(String, String)>) -> Row {
        // Stable sort, then keep the last of equal keys.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut row: Vec<(String, String)> = Vec::with_capacity(members.len());
        for m in members {
            match row.last_mut() {
                Some(last) if last.0 == m.0 => *last = m,
                _ => row.push(m),
            }
        }
        Row(row)
    }

    /// A row from a hash as the store returns it (`hgetall`).
    pub fn from_hash(fields: &[(String, String)]) -> Row {
        Row::new(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), SeedValue::parse(v).json_text()))
                .collect(),
        )
    }

    /// True when the hash had no fields (the seed skips such symbols).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Append the board entry `{rank, symbol, <field>: score, ...hash}` with
    /// sorted keys to `out`: the hash's members win over the three others.
    pub fn write_entry(
        &self,
        out: &mut Vec<u8>,
        rank: usize,
        symbol: &str,
        field: &str,
        score: f64,
    ) {
        let mut extra: [(&str, SeedValue<'_>); 3] = [
            ("rank", SeedValue::Int(rank as i64)),
            ("symbol", SeedValue::Text(symbol)),
            (
                field,
                if score.is_finite() {
                    SeedValue::Float(score)
                } else {
                    SeedValue::Int(0)
                },
            ),
        ];
        extra.sort_by(|a, b| a.0.cmp(b.0));
        let mut extra = extra
            .into_iter()
            .filter(|(k, _)| self.0.binary_search_by(|m| m.0.as_str().cmp(k)).is_err())
            .peekable();
        let mut members = self.0.iter().peekable();
        let mut first = true;
        out.push(b'{');
        loop {
            let take_extra = match (members.peek(), extra.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(m), Some(e)) => e.0 < m.0.as_str(),
            };
            if !first {
                out.push(b',');
            }
            first = false;
            if take_extra {
                let Some((k, v)) = extra.next() else { break };
                write_key(out, k);
                v.write(out);
            } else {
                let Some((k, v)) = members.next() else { break };
                write_key(out, k);
                out.extend_from_slice(v.as_bytes());
            }
        }
        out.push(b'}');
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    let written = serde_json::to_writer(&mut *out, key);
    debug_assert!(written.is_ok());
    out.push(b':');
}

/// A board's JSON array from `(rank, symbol, score, row)` in rank order (the
/// seed counts ranks over the sorted set, so a member without a hash leaves
/// a gap).
pub fn board_json<'r>(
    field: &str,
    entries: impl Iterator<Item = (usize, &'r str, f64, &'r Row)>,
) -> String {
    let mut out = Vec::with_capacity(64 * 1024);
    out.push(b'[');
    for (n, (rank, symbol, score, row)) in entries.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        row.write_entry(&mut out, rank, symbol, field, score);
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    /// The entry as the seed builds it: a dict, then sorted keys.
    fn seed_entry(
        rank: usize,
        symbol: &str,
        field: &str,
        score: f64,
        hash: &[(&str, &str)],
    ) -> String {
        let mut entry = Map::new();
        entry.insert("rank".into(), json!(rank));
        entry.insert("symbol".into(), json!(symbol));
        entry.insert(
            field.into(),
            Number::from_f64(score).map_or(json!(0), Value::Number),
        );
        for (k, v) in hash {
            entry.insert((*k).into(), seed_value(v));
        }
        serde_json::to_string(&Value::Object(entry)).unwrap()
    }

    #[test]
    fn entries_match_the_seed_dict_with_sorted_keys() {
        let cases: [&[(&str, &str)]; 4] = [
            // A full quote hash: it carries the symbol and the score itself.
            &[
                ("symbol", "AAA"),
                ("volume", "100"),
                ("pct_change", "1.5"),
                ("close", "11.0"),
                ("tiny", "1e-05"),
                ("neg", "-0.0"),
            ],
            // A partial hash: the score and symbol come from the board.
            &[("close", "2.5"), ("zeta", "x")],
            // The hash names a rank of its own, and repeats a field.
            &[("rank", "99"), ("close", "1.0"), ("close", "3.0")],
            // Empty (the caller skips it; the writer still agrees).
            &[],
        ];
        for hash in cases {
            let fields: Vec<(String, String)> = hash
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let row = Row::from_hash(&fields);
            for (rank, field, score) in [(1, "pct_change", 2.25), (7, "volume", f64::NAN)] {
                let mut out = Vec::new();
                row.write_entry(&mut out, rank, "SYM", field, score);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    seed_entry(rank, "SYM", field, score, hash),
                    "{hash:?} {field}"
                );
            }
        }
    }

    #[test]
    fn boards_are_arrays_in_rank_order() {
        let row = Row::from_hash(&[("close".into(), "1.0".into())]);
        let text = board_json("v", [(1, "A", 2.0, &row), (3, "B", 1.0, &row)].into_iter());
        let board: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(board[1]["rank"], 3);
        assert_eq!(board[1]["symbol"], "B");
        assert_eq!(board[0]["v"], 2.0);
    }
}
