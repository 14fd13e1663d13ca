// news-feed in JavaScript: the seed's FinlightDataAnalyzer,
// twin of plugins/news-feed and plugins/python/news-feed-py.
// Every article goes, unchanged, onto the capped list news:feed:latest and is
// published there; its tickers get it on news:ticker:{SYM}. Enhanced articles
// (non-empty `companies`) name tickers through US primary listings (XNYS,
// XASE, XNAS); raw ones through exchange tags such as "(Nasdaq: ATOS)" or "( NYSE:GM )".
// Tickers are upper-cased and de-duplicated; malformed ones are skipped and
// counted. Rules, reasons and counters are exactly the Rust crate's.
import { counter } from 'mdp:analyzer/host@1.1.0';

const FEED_KEY = 'news:feed:latest';
const US_EXCHANGES = ['XNYS', 'XASE', 'XNAS'];
// Python's \s in text, spelled as a class the Rust and Python engines read
// alike (JavaScript's own \s differs from it: no U+001C-U+001F or U+0085,
// but U+FEFF).
const WS = String.raw`[\t\n\x0b\x0c\r\x1c-\x1f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]`;
// The seed's \(\s*(?:nasdaq|nyse|amex)\s*:\s*([A-Z]{1,6})\s*\) (ignoring
// case), spelled out so Rust, Python and JavaScript engines agree exactly.
const TAG = new RegExp(
  String.raw`\(${WS}*(?:[Nn][Aa][Ss][Dd][Aa][Qq]|[Nn][Yy][Ss][Ee]|[Aa][Mm][Ee][Xx])${WS}*:${WS}*([A-Za-z]{1,6})${WS}*\)`,
  'g',
);
const TICKER = /^[A-Za-z0-9.\-/]{1,16}$/;

const settings = {
  feedMax: 10000,
  tickerMax: 100,
  feedTtl: 172800,
  tickerTtl: 604800,
};

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function tickers(article) {
  const out = [];
  let skipped = 0;
  const add = (t) => {
    if (!out.includes(t)) out.push(t);
  };
  const companies = article.companies;
  if (Array.isArray(companies) && companies.length > 0) {
    for (const company of companies) {
      const listing = isObject(company) ? company.primaryListing : undefined;
      if (!isObject(listing)) {
        skipped += 1;
        continue;
      }
      const code = listing.exchangeCode;
      if (!(typeof code === 'string' && US_EXCHANGES.includes(code))) continue;
      const ticker = [listing.ticker, company.ticker].find((v) => typeof v === 'string' && v !== '');
      const upper = ticker === undefined ? undefined : ticker.toUpperCase();
      if (upper !== undefined && TICKER.test(upper)) add(upper);
      else skipped += 1;
    }
  } else {
    const text = (k) => (typeof article[k] === 'string' ? article[k] : '');
    for (const m of `${text('title')} ${text('summary')}`.matchAll(TAG)) add(m[1].toUpperCase());
  }
  return [out, skipped];
}

function configU32(config, key, fallback) {
  let value;
  for (const [k, v] of config) if (k === key) value = v;
  if (value === undefined) return fallback;
  if (!/^\+?[0-9]+$/.test(value) || Number(value) > 0xffffffff) {
    throw { tag: 'bad-config', val: `config \`${key}\` = \`${value}\`: not a u32` };
  }
  return Number(value);
}

export function describe() {
  return { name: 'news-feed-js', version: '0.1.0', consumes: { other: true }, stateVersion: 0 };
}

export function init(config, _state) {
  settings.feedMax = configU32(config, 'news_feed_list_max', 10000);
  settings.tickerMax = configU32(config, 'news_ticker_list_max', 100);
  settings.feedTtl = configU32(config, 'news_feed_cache_ttl', 172800);
  settings.tickerTtl = configU32(config, 'news_ticker_cache_ttl', 604800);
}

export function analyze(batch) {
  const effects = [];
  let articles = 0;
  let filed = 0;
  let skipped = 0;
  batch.forEach((event, i) => {
    const reject = (reason) => effects.push({ tag: 'reject', val: { index: i, reason } });
    if (event.tag !== 'other') return reject('not a news article');
    let article;
    try {
      article = JSON.parse(event.val.json);
    } catch {
      return reject('news article is not JSON');
    }
    if (article === null) return;
    if (!isObject(article)) return reject('news article is not a JSON object');
    if (Object.keys(article).length === 0) return;
    articles += 1;
    const body = { tag: 'input', val: i };
    effects.push({ tag: 'push', val: { key: FEED_KEY, value: body, maxLen: settings.feedMax, ttlSecs: settings.feedTtl } });
    effects.push({ tag: 'publish', val: { channel: FEED_KEY, value: body } });
    const [found, bad] = tickers(article);
    skipped += bad;
    for (const sym of found) {
      filed += 1;
      const key = `news:ticker:${sym}`;
      effects.push({ tag: 'push', val: { key, value: body, maxLen: settings.tickerMax, ttlSecs: settings.tickerTtl } });
      effects.push({ tag: 'publish', val: { channel: key, value: body } });
    }
  });
  counter('fda.processed', BigInt(batch.length));
  if (articles) counter('fda.articles', BigInt(articles));
  if (filed) counter('fda.ticker_articles', BigInt(filed));
  if (skipped) counter('fda.skipped_tickers', BigInt(skipped));
  return effects;
}

export function snapshot() {
  return new Uint8Array();
}
