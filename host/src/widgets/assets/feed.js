// A widget-protocol WebSocket that reconnects with
// exponential back-off (1 s → 30 s), re-authenticates, re-reads its
// snapshots and re-subscribes after every reconnect, and reports its state.
//
// Credentials: a signed token given to the page as `#token=…` (kept in
// sessionStorage, never in the page source). The dashboard never receives a
// third-party API key.

const url = () => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

export function token() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem('mdp.token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem('mdp.token');
}

const sockets = new Set();
const listeners = new Set();

/** Overall state of every socket: 'live', 'connecting', 'retrying', 'unauthorized'. */
export function onState(fn) { listeners.add(fn); report(); }
setInterval(report, 1000);

function report() {
  const all = [...sockets];
  const state = all.some((s) => s.state === 'unauthorized') ? 'unauthorized'
    : all.length && all.every((s) => s.state === 'live') ? 'live'
      : all.some((s) => s.state === 'retrying') ? 'retrying' : 'connecting';
  const retryIn = Math.max(0, ...all.map((s) => s.retryAt - Date.now()));
  listeners.forEach((fn) => fn(state, retryIn));
}

export class FeedSocket {
  /**
   * @param {{gets?: Array<{cache: string, limit?: number}>, feeds?: string[]}} wants
   * @param {(data: any, snapshotKey: string|null) => void} onData pushes (key null) and snapshots
   */
  constructor(wants, onData) {
    this.gets = wants.gets ?? [];
    this.feeds = new Set(wants.feeds ?? []);
    this.onData = onData;
    this.attempts = 0;
    this.state = 'connecting';
    this.retryAt = 0;
    sockets.add(this);
    this.open();
  }

  send(m) { if (this.ws?.readyState === 1 && this.ready) this.ws.send(JSON.stringify(m)); }

  subscribe(feed) { this.feeds.add(feed); this.send({ action: 'subscribe', feed }); }

  unsubscribe(feed) { this.feeds.delete(feed); this.send({ action: 'unsubscribe', feed }); }

  get(cache, limit) { this.send(limit ? { action: 'get', cache, limit } : { action: 'get', cache }); }

  setState(s) { this.state = s; report(); }

  start() {
    this.ready = true;
    this.attempts = 0;
    this.setState('live');
    for (const g of this.gets) this.get(g.cache, g.limit);
    for (const f of this.feeds) this.send({ action: 'subscribe', feed: f });
  }

  open() {
    this.ready = false;
    this.setState(this.attempts ? 'retrying' : 'connecting');
    const ws = this.ws = new WebSocket(url());
    const t = token();
    ws.onopen = () => {
      if (t) ws.send(JSON.stringify({ action: 'auth', token: t }));
      else this.start();
    };
    ws.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m && !Array.isArray(m) && typeof m === 'object' && 'status' in m && Object.keys(m).length <= 2) {
        if (m.status === 'authorized') this.start();
        else if (/invalid|unauthorized|expired/.test(m.status)) this.setState('unauthorized');
        return; // status frames are not data (a seed front-end flaw)
      }
      if (m && !Array.isArray(m) && typeof m === 'object' && 'cache' in m && 'data' in m) {
        this.onData(m.data, m.cache);
        return;
      }
      this.onData(m, null);
    };
    ws.onclose = () => {
      if (this.state === 'unauthorized' && !token()) return;
      const delay = Math.min(1000 * 2 ** this.attempts++, 30000);
      this.retryAt = Date.now() + delay;
      if (this.state !== 'unauthorized') this.setState('retrying');
      setTimeout(() => this.open(), delay);
    };
  }
}
