//! Turning a batch's effects into store writes: bodies resolved against the
//! batch's input texts, capabilities enforced, rejects separated.

use std::sync::Arc;
use std::time::Duration;

use mdp_sdk::wire::EffectRecord;

use super::bindings::{Body, Effect};
use super::capability::{Capabilities, Denied};
use crate::store::Write;

/// The effects of one batch, ready to apply.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolved {
    /// Writes in order.
    pub writes: Vec<Write>,
    /// Rejected events: (index in the batch, reason).
    pub rejects: Vec<(usize, String)>,
    /// Effects refused by the capability check (counted, logged, not applied).
    pub denied: Vec<Denied>,
}

/// A batch's message text, as effects' `Body::Input` bodies refer to it.
/// Resolving shares an `Arc<str>` input instead of copying it per effect.
pub trait InputText {
    /// The text, shared.
    fn shared(&self) -> Arc<str>;
}

impl InputText for Arc<str> {
    fn shared(&self) -> Arc<str> {
        self.clone()
    }
}

impl InputText for String {
    fn shared(&self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}

fn body(b: &Body, inputs: &[impl InputText]) -> Arc<str> {
    match b {
        Body::Json(s) => Arc::from(s.as_str()),
        Body::Input(i) => inputs
            .get(*i as usize)
            .map(InputText::shared)
            .unwrap_or_else(|| Arc::from("null")),
    }
}

/// Bytes `effect` resolves to (keys, channels, bodies, members with their
/// scores, fields and reasons), with `inputs[i]` the text of input `i`
/// (0 bytes when unknown).
pub fn output_bytes(effect: &Effect, inputs: &[Arc<str>]) -> usize {
    let body = |b: &Body| match b {
        Body::Json(s) => s.len(),
        Body::Input(i) => inputs.get(*i as usize).map_or(0, |t| t.len()),
    };
    match effect {
        Effect::Put(p) => p.key.len() + body(&p.value),
        Effect::Push(p) => p.key.len() + body(&p.value),
        Effect::Zadd(z) => z.key.len() + z.members.iter().map(|(m, _)| m.len() + 8).sum::<usize>(),
        Effect::Hset(h) => {
            h.key.len()
                + h.fields
                    .iter()
                    .map(|(f, v)| f.len() + v.len())
                    .sum::<usize>()
        }
        Effect::Del(keys) => keys.iter().map(String::len).sum(),
        Effect::Publish(p) => p.channel.len() + body(&p.value),
        Effect::Reject(r) => r.reason.len(),
    }
}

fn secs(ttl: Option<u32>) -> Option<Duration> {
    ttl.filter(|t| *t > 0)
        .map(|t| Duration::from_secs(u64::from(t)))
}

/// One effect with its body resolved: a write, or a reject.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A store write.
    Write(Write),
    /// Reject the event at this index, with a reason.
    Reject(usize, String),
}

/// Resolve one effect against the batch's message texts `inputs`.
pub fn resolve_one(effect: &Effect, inputs: &[impl InputText]) -> Outcome {
    Outcome::Write(match effect {
        Effect::Put(p) => Write::Set {
            key: p.key.clone(),
            value: body(&p.value, inputs),
            ttl: secs(p.ttl_secs),
        },
        Effect::Push(p) => Write::Push {
            key: p.key.clone(),
            value: body(&p.value, inputs),
            max_len: p.max_len.max(1),
            ttl: secs(p.ttl_secs),
        },
        Effect::Zadd(z) => Write::ZAdd {
            key: z.key.clone(),
            members: z
                .members
                .iter()
                .filter(|(_, s)| s.is_finite())
                .cloned()
                .collect(),
            keep_top: z.keep_top,
            ttl: secs(z.ttl_secs),
        },
        Effect::Hset(h) => Write::HSet {
            key: h.key.clone(),
            fields: h.fields.clone(),
            ttl: secs(h.ttl_secs),
        },
        Effect::Del(keys) => Write::Del { keys: keys.clone() },
        Effect::Publish(p) => Write::Publish {
            channel: p.channel.clone(),
            message: body(&p.value, inputs),
        },
        Effect::Reject(r) => return Outcome::Reject(r.index as usize, r.reason.clone()),
    })
}

/// Check a write against the plugin's capabilities.
pub fn check(write: &Write, caps: &Capabilities) -> Result<(), Denied> {
    match write {
        Write::Set { key, .. }
        | Write::Push { key, .. }
        | Write::ZAdd { key, .. }
        | Write::HSet { key, .. } => caps.check_key(key),
        Write::Del { keys } => keys.iter().try_for_each(|k| caps.check_key(k)),
        Write::Publish { channel, .. } => caps.check_channel(channel),
    }
}

/// Resolve `effects` of a batch whose message texts are `inputs`.
pub fn resolve(effects: &[Effect], inputs: &[impl InputText], caps: &Capabilities) -> Resolved {
    let mut out = Resolved::default();
    for effect in effects {
        match resolve_one(effect, inputs) {
            Outcome::Write(w) => match check(&w, caps) {
                Ok(()) => out.writes.push(w),
                Err(d) => out.denied.push(d),
            },
            Outcome::Reject(i, reason) => out.rejects.push((i, reason)),
        }
    }
    out
}

/// The input index an effect refers to, if any (a body or a reject).
fn input_index(effect: &mut Effect) -> Option<&mut u32> {
    fn body(b: &mut Body) -> Option<&mut u32> {
        match b {
            Body::Input(i) => Some(i),
            Body::Json(_) => None,
        }
    }
    match effect {
        Effect::Put(p) => body(&mut p.value),
        Effect::Push(p) => body(&mut p.value),
        Effect::Publish(p) => body(&mut p.value),
        Effect::Reject(r) => Some(&mut r.index),
        Effect::Zadd(_) | Effect::Hset(_) | Effect::Del(_) => None,
    }
}

/// Shift every input index in `effects` by `offset` (effects of a sub-batch
/// of `len` events that started at `offset` in the whole batch). The indexes
/// come from the guest: an effect whose index is outside the sub-batch
/// (it would name another event, or overflow) is removed instead, and
/// described in the returned list, for the caller to count and log as denied.
pub fn shift(effects: &mut Vec<Effect>, offset: u32, len: u32) -> Vec<String> {
    let mut denied = Vec::new();
    effects.retain_mut(|effect| {
        let kind = kind(effect);
        let Some(index) = input_index(effect) else {
            return true;
        };
        match (*index < len).then(|| index.checked_add(offset)).flatten() {
            Some(shifted) => {
                *index = shifted;
                true
            }
            None => {
                denied.push(format!(
                    "{kind} effect refers to input {index} of a sub-batch of {len} events"
                ));
                false
            }
        }
    });
    denied
}

/// The JSON form of one effect (what `mdp plugin test` prints, golden files hold).
pub fn record(effect: &Effect, inputs: &[String]) -> EffectRecord {
    let ttl_secs = |t: &Option<Duration>| t.map(|d| d.as_secs() as u32);
    match resolve_one(effect, inputs) {
        Outcome::Reject(index, reason) => EffectRecord::Reject {
            index: index as u32,
            reason,
        },
        Outcome::Write(Write::Set { key, value, ttl }) => EffectRecord::Put {
            key,
            value: value.to_string(),
            ttl_secs: ttl_secs(&ttl),
        },
        Outcome::Write(Write::Push {
            key,
            value,
            max_len,
            ttl,
        }) => EffectRecord::Push {
            key,
            value: value.to_string(),
            max_len,
            ttl_secs: ttl_secs(&ttl),
        },
        Outcome::Write(Write::ZAdd {
            key,
            members,
            keep_top,
            ttl,
        }) => EffectRecord::Zadd {
            key,
            members,
            keep_top,
            ttl_secs: ttl_secs(&ttl),
        },
        Outcome::Write(Write::HSet { key, fields, ttl }) => EffectRecord::Hset {
            key,
            fields,
            ttl_secs: ttl_secs(&ttl),
        },
        Outcome::Write(Write::Del { keys }) => EffectRecord::Del { keys },
        Outcome::Write(Write::Publish { channel, message }) => EffectRecord::Publish {
            channel,
            value: message.to_string(),
        },
    }
}

/// Log what a batch had refused or rejected as one line: how many, and the
/// first (a plugin refused thousands of times logs once per batch, not
/// thousands of lines).
pub fn log_batch<T: std::fmt::Display>(plugin: &str, what: &str, items: &[T]) {
    if let Some(first) = items.first() {
        tracing::warn!(plugin, count = items.len(), %first, "{what} (count in this batch; first shown)");
    }
}

/// The kind of an effect, for metrics.
pub fn kind(effect: &Effect) -> &'static str {
    match effect {
        Effect::Put(_) => "put",
        Effect::Push(_) => "push",
        Effect::Zadd(_) => "zadd",
        Effect::Hset(_) => "hset",
        Effect::Del(_) => "del",
        Effect::Publish(_) => "publish",
        Effect::Reject(_) => "reject",
    }
}

#[cfg(test)]
mod tests {
    use super::super::bindings::mdp::analyzer::types::{Put, Reject};
    use super::*;

    fn put(i: u32) -> Effect {
        Effect::Put(Put {
            key: "k".into(),
            value: Body::Input(i),
            ttl_secs: None,
        })
    }

    fn reject(i: u32) -> Effect {
        Effect::Reject(Reject {
            index: i,
            reason: "bad".into(),
        })
    }

    #[test]
    fn input_bodies_share_the_input_text() {
        let inputs: Vec<Arc<str>> = vec![Arc::from("{\"a\":1}")];
        let resolved = resolve(&[put(0), put(0)], &inputs, &Capabilities::unrestricted());
        let values: Vec<&Arc<str>> = resolved
            .writes
            .iter()
            .map(|w| match w {
                Write::Set { value, .. } => value,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(Arc::ptr_eq(values[0], &inputs[0]));
        assert!(Arc::ptr_eq(values[1], &inputs[0]));
        assert_eq!(output_bytes(&put(0), &inputs), 1 + 7);
    }

    #[test]
    fn shift_moves_indexes_inside_the_sub_batch() {
        let mut effects = vec![put(0), reject(2), Effect::Del(vec!["x".into()])];
        assert!(shift(&mut effects, 10, 3).is_empty());
        let want = [put(10), reject(12), Effect::Del(vec!["x".into()])];
        assert_eq!(format!("{effects:?}"), format!("{want:?}"));
    }

    #[test]
    fn out_of_range_guest_indexes_are_denied_not_a_panic() {
        let mut effects = vec![
            put(u32::MAX),
            reject(u32::MAX - 1),
            put(3),
            put(1),
            reject(4),
        ];
        let denied = shift(&mut effects, 8, 3);
        assert_eq!(
            format!("{effects:?}"),
            format!("{:?}", [put(9)]),
            "only the in-range effect is kept"
        );
        assert_eq!(denied.len(), 4, "{denied:?}");
        assert!(
            denied[0].contains("put effect refers to input 4294967295"),
            "{denied:?}"
        );
        assert!(denied[1].starts_with("reject effect"), "{denied:?}");
    }
}
