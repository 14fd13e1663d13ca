// Golden-file harness for the JavaScript analyzers, run natively in Node
// (no componentize-js, no Wasm):
//   node plugins/js/golden.mjs <plugin.js> <golden.json>
// The plugin's `mdp:analyzer/*` imports resolve (module loader hook) to stubs
// over an in-memory store seeded with the golden's `store`; each step's
// events reach `analyze` as the component gets them (variants as
// {tag, val}, camelCase fields, u64 as BigInt); its effects, bodies
// resolved, are compared with the step's expected ones, then applied to the
// store. Restarts (`cold`, `snapshot`) and replicas load fresh instances of
// the module. Exits 1 with a diff on the first mismatch. Unlike the host:
// the reference imports throw (steps' `market` is ignored), and JSON numbers
// are JavaScript's (integers past 2^53 lose digits, `1.0` reads as `1`).
import { register } from 'node:module';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [pluginPath, goldenPath] = process.argv.slice(2);
if (!pluginPath || !goldenPath) {
  console.error('usage: node plugins/js/golden.mjs <plugin.js> <golden.json>');
  process.exit(2);
}
const golden = JSON.parse(readFileSync(goldenPath, 'utf8'));

// --- the store: key -> { kind, value, expiresUs } ---------------------------
const store = new Map();
let nowUs = BigInt(golden.now_us ?? 0);
const live = (key) => {
  const e = store.get(key);
  if (e && e.expiresUs !== undefined && e.expiresUs <= nowUs) store.delete(key);
  return store.get(key);
};
const valueOf = (key, kind, empty) => {
  const e = live(key);
  return e && e.kind === kind ? e.value : empty;
};
const expire = (key, ttlSecs) => {
  const e = store.get(key);
  if (e && ttlSecs !== undefined) e.expiresUs = nowUs + BigInt(ttlSecs) * 1000000n;
};
const setEntry = (key, kind, value) => {
  const old = live(key);
  if (old && old.kind === kind) old.value = value;
  else store.set(key, { kind, value });
};
for (const [k, v] of Object.entries(golden.store ?? {})) store.set(k, { kind: 'string', value: v });

// --- what the plugin imports ------------------------------------------------
let inputs = []; // the current batch's events as JSON text
const counters = {};
const notHere = (name) => () => {
  throw new Error(`golden.mjs: ${name} is not provided by this harness`);
};
globalThis.mdpImports = {
  cache: {
    get: (key) => (live(key)?.kind === 'string' ? live(key).value : undefined),
    getMany: (keys) => keys.map((k) => globalThis.mdpImports.cache.get(k)),
    ztop: (key, n) =>
      [...valueOf(key, 'zset', new Map())]
        .sort(([a, x], [b, y]) => y - x || (b > a ? 1 : b < a ? -1 : 0))
        .slice(0, n),
    hgetall: (key) => [...valueOf(key, 'hash', new Map())],
    lrange: (key, start, stop) => {
      const list = valueOf(key, 'list', []);
      const at = (i) => (i < 0 ? list.length + i : i);
      return list.slice(Math.max(at(start), 0), at(stop) + 1);
    },
    tryAcquire: (key, ttlMs) => {
      if (live(key)) return false;
      store.set(key, { kind: 'string', value: '1', expiresUs: nowUs + BigInt(ttlMs) * 1000n });
      return true;
    },
  },
  reference: Object.fromEntries(
    ['tickerSnapshot', 'avgVolume', 'freeFloat', 'marketNow'].map((n) => [n, notHere(n)]),
  ),
  host: {
    log: (level, message) => console.error(`[${level}] ${message}`),
    counter: (name, delta) => {
      counters[name] = (counters[name] ?? 0n) + delta;
    },
    nowUs: () => nowUs,
    inputJson: (index) => inputs[index],
  },
};
const stub = (iface) =>
  'data:text/javascript,' +
  encodeURIComponent(
    `export const { ${Object.keys(globalThis.mdpImports[iface]).join(', ')} } = globalThis.mdpImports.${iface};`,
  );
const hooks = `
  let stubs;
  export function initialize(data) { stubs = data; }
  export function resolve(specifier, context, next) {
    const iface = /^mdp:analyzer\\/([a-z-]+)@[0-9.]+$/.exec(specifier)?.[1];
    return iface in stubs ? { url: stubs[iface], shortCircuit: true } : next(specifier, context);
  }`;
register('data:text/javascript,' + encodeURIComponent(hooks), {
  data: Object.fromEntries(Object.keys(globalThis.mdpImports).map((i) => [i, stub(i)])),
});

// --- events, as the host decodes queue JSON (sdk/src/wire.rs) ----------------
const f64 = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const u64 = (v) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? BigInt(v) : undefined);
const u32 = (v) => (u64(v) !== undefined && v <= 0xffffffff ? v : undefined);
const str = (v) => (typeof v === 'string' && v !== '' ? v : typeof v === 'number' ? String(v) : undefined);
const u32s = (v) => (Array.isArray(v) ? v.filter((x) => u32(x) !== undefined) : []);
// [field, JSON key, decode, default when absent (none: required)]
const TYPED = {
  T: ['trade', [['price', 'price', f64], ['size', 'size', u64], ['exchange', 'exchange', u32, 0],
    ['id', 'id', str, ''], ['tape', 'tape', u32, 0], ['conditions', 'conditions', u32s],
    ['timestampMs', 'timestamp', u64], ['sequence', 'sequence_number', u64, 0n]]],
  Q: ['quote', [['bidPrice', 'bid_price', f64], ['bidSize', 'bid_size', u64, 0n],
    ['bidExchange', 'bid_exchange_id', u32, 0], ['askPrice', 'ask_price', f64],
    ['askSize', 'ask_size', u64, 0n], ['askExchange', 'ask_exchange_id', u32, 0],
    ['condition', 'condition', u32, undefined], ['indicators', 'indicators', u32s],
    ['timestampMs', 'timestamp', u64], ['sequence', 'sequence_number', u64, 0n], ['tape', 'tape', u32, 0]]],
  A: ['aggregate', [['volume', 'volume', u64], ['accumulatedVolume', 'accumulated_volume', u64, 0n],
    ['officialOpenPrice', 'official_open_price', f64, 0], ['vwap', 'vwap', f64, 0],
    ['open', 'open', f64], ['close', 'close', f64], ['high', 'high', f64], ['low', 'low', f64],
    ['aggregateVwap', 'aggregate_vwap', f64, 0], ['averageSize', 'average_size', f64, 0],
    ['startMs', 'start_timestamp', u64], ['endMs', 'end_timestamp', u64],
    ['otc', 'otc', (v) => (typeof v === 'boolean' ? v : undefined), false]]],
  LULD: ['luld', [['highPrice', 'high_price', f64], ['lowPrice', 'low_price', f64],
    ['indicators', 'indicators', u32s], ['tape', 'tape', u32, 0],
    ['timestampNs', 'timestamp', u64], ['sequence', 'sequence_number', u64, 0n]]],
};
TYPED.AM = TYPED.A;

function decode(value, text) {
  const isObject = value !== null && typeof value === 'object';
  const kind = isObject && typeof value.event_type === 'string' ? value.event_type : '';
  const other = { tag: 'other', val: { kind, json: text } };
  const [tag, fields] = TYPED[kind] ?? [];
  const symbol = isObject ? str(value.symbol) : undefined;
  if (!tag || symbol === undefined) return other;
  const val = kind === 'A' ? { window: 'second' } : kind === 'AM' ? { window: 'minute' } : {};
  val.symbol = symbol;
  for (const [field, key, read, ...fallback] of fields) {
    const v = read(value[key]);
    if (v === undefined && fallback.length === 0) return other;
    val[field] = v ?? fallback[0];
  }
  return { tag, val };
}

// JSON text as serde_json writes a parsed value: compact, keys sorted.
const serdeText = (v) =>
  v !== null && typeof v === 'object' && !Array.isArray(v)
    ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${serdeText(v[k])}`).join(',')}}`
    : Array.isArray(v)
      ? `[${v.map(serdeText).join(',')}]`
      : JSON.stringify(v);

// --- effects: the golden's record form, and applying them --------------------
const body = (b) => (b.tag === 'json' ? b.val : (inputs[b.val] ?? 'null'));
const optional = (name, v) => (v === undefined ? {} : { [name]: v });
function record({ tag, val: v }) {
  switch (tag) {
    case 'put': return { op: tag, key: v.key, value: body(v.value), ...optional('ttl_secs', v.ttlSecs) };
    case 'push': return { op: tag, key: v.key, value: body(v.value), max_len: v.maxLen, ...optional('ttl_secs', v.ttlSecs) };
    case 'zadd': return { op: tag, key: v.key, members: v.members, ...optional('keep_top', v.keepTop), ...optional('ttl_secs', v.ttlSecs) };
    case 'hset': return { op: tag, key: v.key, fields: v.fields, ...optional('ttl_secs', v.ttlSecs) };
    case 'del': return { op: tag, keys: v };
    case 'publish': return { op: tag, channel: v.channel, value: body(v.value) };
    case 'reject': return { op: tag, index: v.index, reason: v.reason };
    default: throw new Error(`unknown effect ${tag}`);
  }
}
function apply(r) {
  if (r.op === 'put') {
    store.set(r.key, { kind: 'string', value: r.value });
    expire(r.key, r.ttl_secs);
  } else if (r.op === 'push') {
    setEntry(r.key, 'list', [r.value, ...valueOf(r.key, 'list', [])].slice(0, r.max_len));
    expire(r.key, r.ttl_secs);
  } else if (r.op === 'zadd') {
    const set = new Map([...valueOf(r.key, 'zset', new Map()), ...r.members]);
    const kept = r.keep_top === undefined ? [...set] : [...set].sort(([, x], [, y]) => y - x).slice(0, r.keep_top);
    setEntry(r.key, 'zset', new Map(kept));
    expire(r.key, r.ttl_secs);
  } else if (r.op === 'hset') {
    setEntry(r.key, 'hash', new Map([...valueOf(r.key, 'hash', new Map()), ...r.fields]));
    expire(r.key, r.ttl_secs);
  } else if (r.op === 'del') {
    for (const k of r.keys) store.delete(k);
  }
}
// One effect per line, keys in one order, so expected and got compare as text.
const line = (r) => JSON.stringify(Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a === 'op' ? -1 : b === 'op' ? 1 : a < b ? -1 : 1))));

// A line diff: common lines indented, expected-only `- `, got-only `+ `.
function diff(a, b) {
  const lcs = a.map(() => new Array(b.length + 1).fill(0)).concat([new Array(b.length + 1).fill(0)]);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let [i, j] = [0, 0];
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push(`  ${a[i]}`);
      [i, j] = [i + 1, j + 1];
    } else if (j === b.length || (i < a.length && lcs[i + 1][j] >= lcs[i][j + 1])) out.push(`- ${a[i++]}`);
    else out.push(`+ ${b[j++]}`);
  }
  return out.join('\n');
}

// --- the run -----------------------------------------------------------------
const pluginUrl = pathToFileURL(pluginPath).href;
const config = Object.entries(golden.config ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
let loads = 0;
async function start(state) {
  loads += 1; // a fresh module instance: its own top-level state
  const plugin = await import(`${pluginUrl}?instance=${loads}`);
  plugin.init(config, state);
  return plugin;
}
const fail = (message) => {
  console.error(`golden.mjs: ${goldenPath}: ${message}`);
  process.exit(1);
};
const replicas = new Map();
try {
  replicas.set(0, await start(undefined));
} catch (e) {
  fail(`init failed: ${JSON.stringify(e) ?? e}`);
}
for (const [index, step] of golden.steps.entries()) {
  nowUs = BigInt(step.now_us ?? golden.now_us ?? 0);
  const replica = step.replica ?? 0;
  const old = replicas.get(replica);
  let got;
  try {
    if (step.restart || !old) replicas.set(replica, await start(step.restart === 'snapshot' && old ? old.snapshot() : undefined));
    inputs = step.events.map(serdeText);
    got = replicas.get(replica).analyze(step.events.map((e, i) => decode(e, inputs[i]))).map(record);
  } catch (e) {
    fail(`step ${index}: batch failed: ${e instanceof Error ? e.stack : JSON.stringify(e)}`);
  }
  const [expected, actual] = [step.effects.map(line), got.map(line)];
  if (expected.join('\n') !== actual.join('\n')) {
    fail(`step ${index}: effects differ (- expected, + got)\n${diff(expected, actual)}`);
  }
  got.forEach(apply);
}
console.error(`golden.mjs: ${goldenPath}: ${golden.steps.length} steps ok`);
