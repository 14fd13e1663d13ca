// massive-router in JavaScript: the seed's MassiveDataAnalyzer,
// twin of plugins/massive-router and
// plugins/python/massive-router-py. Every event is cached under a per-symbol
// key with the seed's TTL and published on the same channel; the value is
// the input message unchanged. Unknown or symbol-less events go to
// unknown:{epoch us}.
import { counter, nowUs } from 'mdp:analyzer/host@1.1.0';

const ROUTES = {
  LULD: ['stocks:luld', 86400],
  A: ['stocks:agg', 300],
  AM: ['stocks:agg', 300],
  T: ['stocks:trades', 3600],
  Q: ['stocks:quotes', 3600],
};
const UNKNOWN_TTL = 86400;
const TYPED = { trade: 'T', quote: 'Q', aggregate: 'A', luld: 'LULD' };

function kindAndSymbol(event) {
  if (event.tag in TYPED) return [TYPED[event.tag], event.val.symbol];
  let value;
  try { value = JSON.parse(event.val.json); } catch { return null; }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return null;
  const { event_type: kind, symbol } = value;
  return typeof kind === 'string' && typeof symbol === 'string' && symbol ? [kind, symbol] : null;
}

export function describe() {
  return {
    name: 'massive-router-js',
    version: '0.1.0',
    consumes: { trade: true, quote: true, aggregate: true, luld: true, other: true },
    stateVersion: 0,
  };
}

export function init(_config, _state) {}

export function analyze(batch) {
  const effects = [];
  let now = null;
  let unknown = 0;
  batch.forEach((event, i) => {
    const body = { tag: 'input', val: i };
    const routed = kindAndSymbol(event);
    const route = routed ? ROUTES[routed[0]] : undefined;
    if (route) {
      const key = `${route[0]}:${routed[1]}`;
      effects.push({ tag: 'put', val: { key, value: body, ttlSecs: route[1] } });
      effects.push({ tag: 'publish', val: { channel: key, value: body } });
    } else {
      unknown += 1;
      if (now === null) now = nowUs();
      const key = `unknown:${now + BigInt(i)}`;
      effects.push({ tag: 'put', val: { key, value: body, ttlSecs: UNKNOWN_TTL } });
      effects.push({ tag: 'publish', val: { channel: 'unknown', value: body } });
    }
  });
  if (unknown) counter('mda.unknown', BigInt(unknown));
  counter('mda.processed', BigInt(batch.length));
  return effects;
}

export function snapshot() {
  return new Uint8Array();
}
