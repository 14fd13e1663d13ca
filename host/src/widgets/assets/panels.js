// Panel layout and freshness. Every `main > section[data-panel]` gets
// move/hide buttons in its title bar and an age readout; the header's
// "Panels" menu shows hidden ones again. Order and visibility persist.
// A panel turns amber (`stale`) when its newest update is older than its
// `data-quiet-ms` while the connection is live.

import { prefs, save } from './prefs.js';

const main = document.querySelector('main');
const panels = () => [...main.querySelectorAll('section[data-panel]')];
const last = new Map();
let live = false;

/** Put the panels in the saved order and hide the hidden ones. */
function apply() {
  const all = panels();
  const order = [...prefs.order.filter((id) => all.some((p) => p.dataset.panel === id)),
    ...all.map((p) => p.dataset.panel).filter((id) => !prefs.order.includes(id))];
  prefs.order = order;
  for (const id of order) {
    const p = main.querySelector(`section[data-panel="${id}"]`);
    main.appendChild(p);
    p.hidden = prefs.hidden.includes(id);
  }
  const menu = document.querySelector('#panels-menu');
  menu.innerHTML = order.map((id) => {
    const title = main.querySelector(`section[data-panel="${id}"] h2 .title`).textContent;
    return `<label><input type="checkbox" data-show="${id}" ${prefs.hidden.includes(id) ? '' : 'checked'}> ${title}</label>`;
  }).join('');
}

/** Add the controls and start the freshness clock. */
export function setupPanels() {
  for (const p of panels()) {
    const h2 = p.querySelector('h2');
    h2.insertAdjacentHTML('beforeend',
      '<span class="ctl"><span class="age" title="age of the newest update"></span>' +
      '<button data-move="-1" title="move earlier">◀</button><button data-move="1" title="move later">▶</button>' +
      '<button data-hide title="hide (Panels menu shows it again)">✕</button></span>');
    h2.addEventListener('click', (e) => {
      const id = p.dataset.panel;
      const move = e.target.closest('[data-move]');
      if (move) {
        const visible = prefs.order.filter((x) => !prefs.hidden.includes(x));
        const i = visible.indexOf(id), j = i + Number(move.dataset.move);
        if (j < 0 || j >= visible.length) return;
        const a = prefs.order.indexOf(id), b = prefs.order.indexOf(visible[j]);
        [prefs.order[a], prefs.order[b]] = [prefs.order[b], prefs.order[a]];
      } else if (e.target.closest('[data-hide]')) {
        prefs.hidden.push(id);
      } else return;
      save(); apply();
    });
  }
  document.querySelector('#panels-menu').addEventListener('change', (e) => {
    const id = e.target.dataset.show;
    prefs.hidden = prefs.hidden.filter((x) => x !== id);
    if (!e.target.checked) prefs.hidden.push(id);
    save(); apply();
  });
  apply();
  setInterval(tick, 1000);
}

/** Record an update of a panel's feed now. */
export function touch(id) {
  last.set(id, Date.now());
  const p = main.querySelector(`section[data-panel="${id}"]`);
  if (p?.classList.contains('stale')) tick();
}

/** Forget a panel's updates (its feed changed, e.g. a new symbol). */
export function reset(id) { last.delete(id); tick(); }

/** The connection state: panels are only stale while it is live. */
export function setLive(on) { live = on; tick(); }

const age = (ms) => ms < 60000 ? `${Math.floor(ms / 1000)} s` : ms < 3600000 ? `${Math.floor(ms / 60000)} min` : `${Math.floor(ms / 3600000)} h`;

function tick() {
  const now = Date.now();
  for (const p of panels()) {
    const at = last.get(p.dataset.panel);
    const quiet = Number(p.dataset.quietMs || 10000);
    p.querySelector('.age').textContent = at ? age(now - at) : '–';
    const stale = live && (at ? now - at > quiet : false);
    p.classList.toggle('stale', stale);
    p.dataset.ageMs = at ? now - at : '';
  }
}
