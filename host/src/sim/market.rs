//! The synthetic market: thousands of symbols with Zipf-like activity and
//! random-walk prices; trades drive quotes and per-second / per-minute
//! aggregates that stay consistent with each other and with the REST
//! snapshots (same state).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// One symbol's state for the day.
#[derive(Debug, Clone)]
pub struct Ticker {
    /// Symbol.
    pub symbol: String,
    /// Previous session close / volume / VWAP.
    pub prev_close: f64,
    /// Previous session volume.
    pub prev_volume: u64,
    /// Today's official open.
    pub open: f64,
    /// Last trade price.
    pub price: f64,
    /// Session high / low.
    pub high: f64,
    /// Session low.
    pub low: f64,
    /// Accumulated volume.
    pub volume: u64,
    /// Accumulated notional, for VWAP.
    pub notional: f64,
    /// 30-day average volume.
    pub avg_volume: f64,
    /// Free float, shares.
    pub free_float: f64,
    /// Trade sequence.
    pub sequence: u64,
    /// Current per-second bar: (open, high, low, close, volume, notional, trades).
    bar_s: Option<Bar>,
    /// Current per-minute bar.
    bar_m: Option<Bar>,
}

#[derive(Debug, Clone, Copy)]
struct Bar {
    start_ms: u64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: u64,
    notional: f64,
    trades: u64,
}

impl Bar {
    fn new(start_ms: u64, price: f64) -> Bar {
        Bar {
            start_ms,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 0,
            notional: 0.0,
            trades: 0,
        }
    }
    /// A print that counts for volume only (odd lot: no high/low/close update).
    fn add_volume_only(&mut self, price: f64, size: u64) {
        self.volume += size;
        self.notional += price * size as f64;
        self.trades += 1;
    }
    fn add(&mut self, price: f64, size: u64) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume += size;
        self.notional += price * size as f64;
        self.trades += 1;
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Symbol names: `AAA`, `AAB`, ... (deterministic).
fn symbol_name(i: usize) -> String {
    let mut n = i;
    let mut s = Vec::new();
    for _ in 0..3 {
        s.push(b'A' + (n % 26) as u8);
        n /= 26;
    }
    if n > 0 {
        s.push(b'A' + (n % 26) as u8);
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// The whole market.
pub struct Market {
    /// Tickers by index (activity rank order).
    pub tickers: Vec<Ticker>,
    index: HashMap<String, usize>,
    cumulative: Vec<f64>,
    rng: StdRng,
}

impl Market {
    /// A market of `n` symbols, deterministic for `seed`.
    pub fn new(n: usize, seed: u64) -> Market {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tickers = Vec::with_capacity(n);
        let mut cumulative = Vec::with_capacity(n);
        let mut total = 0.0;
        for i in 0..n {
            let prev_close = round2(rng.random_range(2.0..300.0f64));
            let gap = rng.random_range(-0.08..0.12f64);
            let open = round2(prev_close * (1.0 + gap));
            let avg_volume = (rng.random_range(2e5..2e7f64) / (1.0 + i as f64 / 50.0)).round();
            tickers.push(Ticker {
                symbol: symbol_name(i),
                prev_close,
                prev_volume: (avg_volume * rng.random_range(0.6..1.4f64)) as u64,
                open,
                price: open,
                high: open,
                low: open,
                volume: 0,
                notional: 0.0,
                avg_volume,
                free_float: (rng.random_range(5e6..5e8f64)).round(),
                sequence: 0,
                bar_s: None,
                bar_m: None,
            });
            // Zipf-like activity: weight 1/(rank+1)^1.1.
            total += 1.0 / ((i + 1) as f64).powf(1.1);
            cumulative.push(total);
        }
        let index = tickers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.symbol.clone(), i))
            .collect();
        Market {
            tickers,
            index,
            cumulative,
            rng,
        }
    }

    /// The ticker named `symbol`.
    pub fn ticker(&self, symbol: &str) -> Option<&Ticker> {
        self.index.get(symbol).map(|i| &self.tickers[*i])
    }

    fn pick(&mut self) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let x = self.rng.random_range(0.0..total);
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.tickers.len() - 1)
    }

    /// Generate one trade (and its quote) at `now_ms`; returns the events.
    pub fn trade(&mut self, now_ms: u64) -> [Value; 2] {
        let i = self.pick();
        let step: f64 = self.rng.random_range(-0.0006..0.0006);
        // About half the prints are odd lots (condition 37): they add volume
        // but do not move the last price or the bars' high/low/close.
        let odd_lot = self.rng.random_bool(0.5);
        let size = if odd_lot {
            self.rng.random_range(1..100u64)
        } else {
            self.rng.random_range(1..50u64) * 100
        };
        let spread = self.rng.random_range(0.01..0.05f64);
        // ~28 % of trades are off-exchange (x = 4, with a TRF id and timestamp).
        let off_exchange = self.rng.random_bool(0.28);
        let exchange = if off_exchange {
            4
        } else {
            self.rng.random_range(5..22u32)
        };
        let sweep = !odd_lot && self.rng.random_bool(0.1);
        let fractional = self.rng.random_bool(0.05);
        let t = &mut self.tickers[i];
        if !odd_lot {
            t.price = round2((t.price * (1.0 + step)).max(0.5));
            t.high = t.high.max(t.price);
            t.low = t.low.min(t.price);
        }
        t.volume += size;
        t.notional += t.price * size as f64;
        t.sequence += 1;
        let sec = now_ms / 1000 * 1000;
        let min = now_ms / 60_000 * 60_000;
        let price = t.price;
        for bar in [
            t.bar_s.get_or_insert_with(|| Bar::new(sec, price)),
            t.bar_m.get_or_insert_with(|| Bar::new(min, price)),
        ] {
            if odd_lot {
                bar.add_volume_only(price, size);
            } else {
                bar.add(price, size);
            }
        }
        let mut trade = json!({
            "ev": "T", "sym": t.symbol, "x": exchange, "i": t.sequence.to_string(), "z": 3,
            "p": t.price, "s": size, "t": now_ms, "q": t.sequence,
        });
        let conditions: &[u32] = if odd_lot {
            &[37]
        } else if sweep {
            &[14, 41]
        } else {
            &[]
        };
        if !conditions.is_empty() {
            trade["c"] = json!(conditions);
        }
        if off_exchange {
            trade["trfi"] = json!(201);
            trade["trft"] = json!(now_ms.saturating_sub(1));
        }
        if fractional {
            trade["ds"] = json!(format!("{size}.0"));
        }
        let quote = json!({
            "ev": "Q", "sym": t.symbol, "bx": exchange, "bp": round2(t.price - spread / 2.0), "bs": 100,
            "ax": exchange, "ap": round2(t.price + spread / 2.0), "as": 100, "t": now_ms, "q": t.sequence, "z": 3,
        });
        [trade, quote]
    }

    /// A quote update without a trade (NBBO moves more often than trades).
    pub fn quote(&mut self, now_ms: u64) -> Value {
        let i = self.pick();
        let spread = self.rng.random_range(0.01..0.05f64);
        let (bx, ax) = (
            self.rng.random_range(1..20u32),
            self.rng.random_range(1..20u32),
        );
        let (bs, as_) = (
            self.rng.random_range(1..20u64) * 100,
            self.rng.random_range(1..20u64) * 100,
        );
        let t = &mut self.tickers[i];
        t.sequence += 1 + (t.sequence % 3); // increasing, with gaps
        json!({
            "ev": "Q", "sym": t.symbol, "bx": bx, "bp": round2(t.price - spread / 2.0), "bs": bs,
            "ax": ax, "ap": round2(t.price + spread / 2.0), "as": as_, "t": now_ms, "q": t.sequence, "z": 3,
        })
    }

    /// A net order imbalance event (ns timestamp, `T` ticker).
    pub fn noi(&mut self, now_ms: u64) -> Value {
        let i = self.pick();
        let (o, p) = (
            self.rng.random_range(1..100u64) * 100,
            self.rng.random_range(1..100u64) * 100,
        );
        let t = &self.tickers[i];
        json!({"ev": "NOI", "T": t.symbol, "t": now_ms * 1_000_000, "at": 1600, "a": "C",
               "i": t.sequence, "x": 10, "o": o, "p": p, "b": t.price})
    }

    /// A symbol drawn by activity (Zipf-like), with its last price.
    pub fn pick_symbol(&mut self) -> (String, f64) {
        let i = self.pick();
        (self.tickers[i].symbol.clone(), self.tickers[i].price)
    }

    /// A uniform random number in `[0, n)` from the market's generator.
    pub fn random_below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n.max(1))
    }

    fn agg_event(t: &Ticker, bar: &Bar, ev: &str, len_ms: u64) -> Value {
        let vwap = if bar.volume > 0 {
            bar.notional / bar.volume as f64
        } else {
            bar.close
        };
        let day_vwap = if t.volume > 0 {
            t.notional / t.volume as f64
        } else {
            t.price
        };
        json!({
            "ev": ev, "sym": t.symbol, "v": bar.volume, "av": t.volume, "op": t.open,
            "vw": (vwap * 10_000.0).round() / 10_000.0, "o": bar.open, "c": bar.close, "h": bar.high,
            "l": bar.low, "a": (day_vwap * 10_000.0).round() / 10_000.0,
            "z": bar.volume / bar.trades.max(1), "s": bar.start_ms, "e": bar.start_ms + len_ms,
        })
    }

    /// Close the bars whose window ended before `now_ms`: `A` events, and
    /// `AM` events at minute boundaries.
    pub fn close_bars(&mut self, now_ms: u64) -> Vec<Value> {
        let mut out = Vec::new();
        for t in &mut self.tickers {
            if let Some(bar) = t.bar_s
                && bar.start_ms + 1000 <= now_ms
            {
                out.push(Self::agg_event(t, &bar, "A", 1000));
                t.bar_s = None;
            }
            if let Some(bar) = t.bar_m
                && bar.start_ms + 60_000 <= now_ms
            {
                out.push(Self::agg_event(t, &bar, "AM", 60_000));
                t.bar_m = None;
            }
        }
        out
    }

    /// A LULD band event for a random active symbol.
    pub fn luld(&mut self, now_ms: u64) -> Value {
        let i = self.pick();
        let t = &self.tickers[i];
        json!({"ev": "LULD", "T": t.symbol, "h": round2(t.price * 1.05), "l": round2(t.price * 0.95),
               "i": [15], "z": 3, "t": now_ms * 1_000_000, "q": t.sequence})
    }

    /// The REST ticker snapshot.
    pub fn snapshot(&self, symbol: &str, now_ms: u64) -> Option<Value> {
        let t = self.ticker(symbol)?;
        let vwap = if t.volume > 0 {
            t.notional / t.volume as f64
        } else {
            t.price
        };
        let change = round2(t.price - t.prev_close);
        Some(json!({
            "ticker": t.symbol,
            "todaysChange": change,
            "todaysChangePerc": (change / t.prev_close * 100_000.0).round() / 1000.0,
            "updated": now_ms * 1_000_000,
            "day": {"o": t.open, "h": t.high, "l": t.low, "c": t.price, "v": t.volume, "vw": (vwap * 10_000.0).round() / 10_000.0},
            "prevDay": {"o": t.prev_close, "h": t.prev_close, "l": t.prev_close, "c": t.prev_close, "v": t.prev_volume, "vw": t.prev_close},
            "lastTrade": {"c": null, "i": t.sequence.to_string(), "p": t.price, "s": 100, "t": now_ms * 1_000_000, "x": 4},
            "lastQuote": {"P": round2(t.price + 0.01), "S": 1, "p": round2(t.price - 0.01), "s": 1, "t": now_ms * 1_000_000},
        }))
    }

    /// 42 days of daily bars ending yesterday, newest first.
    pub fn daily_bars(&self, symbol: &str, today_ms: u64) -> Option<Vec<Value>> {
        let t = self.ticker(symbol)?;
        let mut rng = StdRng::seed_from_u64(
            symbol
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
        );
        let mut bars = Vec::new();
        let mut close = t.prev_close;
        let day = 86_400_000u64;
        let mut d = today_ms / day * day;
        while bars.len() < 30 {
            d -= day;
            let weekday = (d / day + 4) % 7; // 1970-01-01 was a Thursday
            if weekday == 0 || weekday == 6 {
                continue;
            }
            let open = round2(close * (1.0 + rng.random_range(-0.02..0.02f64)));
            let v = (t.avg_volume * rng.random_range(0.7..1.3f64)).round();
            bars.push(json!({"v": v, "vw": close, "o": open, "c": close, "h": open.max(close), "l": open.min(close), "t": d + 4 * 3_600_000, "n": (v / 100.0) as u64}));
            close = open;
        }
        Some(bars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trades_and_bars_agree() {
        let mut m = Market::new(100, 1);
        let mut volume = HashMap::<String, u64>::new();
        let mut last_round_lot = HashMap::<String, f64>::new();
        let (mut odd, mut trf) = (0, 0);
        for i in 0..500 {
            let [t, q] = m.trade(1_000_000 + i);
            let sym = t["sym"].as_str().unwrap().to_string();
            *volume.entry(sym.clone()).or_default() += t["s"].as_u64().unwrap();
            assert!(q["bp"].as_f64().unwrap() < q["ap"].as_f64().unwrap());
            if t["c"] == json!([37]) {
                odd += 1;
                assert!(t["s"].as_u64().unwrap() < 100);
            } else {
                last_round_lot.insert(sym, t["p"].as_f64().unwrap());
            }
            if t["x"] == 4 {
                trf += 1;
                assert!(t["trfi"].is_u64() && t["trft"].is_u64());
            }
        }
        assert!((150..350).contains(&odd), "about half odd lots: {odd}");
        assert!((80..200).contains(&trf), "about 28 % off-exchange: {trf}");
        let bars = m.close_bars(1_000_000 + 120_000);
        let per_minute: u64 = bars
            .iter()
            .filter(|b| b["ev"] == "AM")
            .map(|b| b["v"].as_u64().unwrap())
            .sum();
        assert_eq!(
            per_minute,
            volume.values().sum::<u64>(),
            "minute bars add up to the trades"
        );
        for b in bars.iter().filter(|b| b["ev"] == "AM") {
            if let Some(p) = last_round_lot.get(b["sym"].as_str().unwrap()) {
                assert_eq!(
                    b["c"].as_f64().unwrap(),
                    *p,
                    "odd lots do not set the close"
                );
            }
            let snap = m.snapshot(b["sym"].as_str().unwrap(), 0).unwrap();
            assert_eq!(
                snap["day"]["v"], b["av"],
                "snapshot volume matches the bars"
            );
        }
        assert_eq!(m.daily_bars("AAA", 1_767_225_600_000).unwrap().len(), 30);
        assert!(m.snapshot("NOPE", 0).is_none());
    }
}
