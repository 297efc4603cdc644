// playpod players' input: keyboard, gamepad and touch buttons -> WS input/1 or input/2.
// The page is a spectator unless a player is chosen (?player=1|2, or the buttons on the page).
// Each change of the pad's eight keys is sent as one binary byte, the full state as a bitmask:
// bit 0 up, 1 down, 2 left, 3 right, 4 a, 5 b, 6 start, 7 select (DESIGN.md).
'use strict';

(() => {
  const KEYS = ['up', 'down', 'left', 'right', 'a', 'b', 'start', 'select'];
  const LABELS = { up: '↑', down: '↓', left: '←', right: '→', a: 'A', b: 'B', start: 'start', select: 'select' };
  // Browser key codes (KeyboardEvent.code) for each pad key; changeable on the page.
  const DEFAULT_KEYBOARD = {
    up: ['ArrowUp', 'KeyW'], down: ['ArrowDown', 'KeyS'], left: ['ArrowLeft', 'KeyA'], right: ['ArrowRight', 'KeyD'],
    a: ['KeyX', 'KeyK'], b: ['KeyZ', 'KeyJ'], start: ['Enter'], select: ['ShiftRight', 'Backspace'],
  };
  const STORE = 'playpod.keyboard';
  // Standard gamepad mapping: button indices.
  const PAD_BUTTONS = { up: 12, down: 13, left: 14, right: 15, a: 0, b: 1, select: 8, start: 9 };
  const DEAD_ZONE = 0.5;

  // The page's directory (`/play/TOKEN/`, also when opened as `.../index.html`).
  const base = location.pathname.replace(/[^/]*$/, '');
  const wsBase = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base;
  const badge = document.getElementById('badge');
  const stage = document.getElementById('stage') || document.body;

  // What the page's input does; tests read it.
  const state = (window.playpodInput = {
    player: null, seat: null, connected: false, bits: 0, sent: 0, lastSent: null, errors: 0, lastError: null,
    closeCode: null, closeReason: null, reconnects: 0, gamepads: 0, touch: false, keyboard: null,
    // The pod's reason while the keys cannot reach the game (4003), until a connection holds.
    trouble: null,
  });

  const bit = (key) => 1 << KEYS.indexOf(key);

  // --- keyboard mapping, stored per browser -------------------------------------------------
  function loadKeyboard() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE) || 'null');
      if (saved && KEYS.every((k) => Array.isArray(saved[k]) && saved[k].every((c) => typeof c === 'string'))) return saved;
    } catch (_) { /* a broken entry falls back to the defaults */ }
    return JSON.parse(JSON.stringify(DEFAULT_KEYBOARD));
  }
  let keyboard = loadKeyboard();
  state.keyboard = keyboard;
  function saveKeyboard() {
    try { localStorage.setItem(STORE, JSON.stringify(keyboard)); } catch (_) { /* private mode */ }
    state.keyboard = keyboard;
  }
  function codeToKey(code) {
    return KEYS.find((k) => keyboard[k].includes(code)) || null;
  }

  // --- the page's controls ----------------------------------------------------------------
  const el = (tag, attrs = {}, text = '') => {
    const e = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    if (text) e.textContent = text;
    return e;
  };
  const panel = el('div', { id: 'players' });
  const choose1 = el('button', { type: 'button', 'data-player': '1' }, 'Player 1');
  const choose2 = el('button', { type: 'button', 'data-player': '2' }, 'Player 2');
  const watch = el('button', { type: 'button', 'data-player': '' }, 'Watch');
  const keysButton = el('button', { type: 'button', id: 'keys-toggle', 'aria-expanded': 'false' }, 'Keys');
  panel.append(choose1, choose2, watch, keysButton);
  const keysPanel = el('div', { id: 'keys', hidden: '' });
  stage.append(panel, keysPanel);

  let rebinding = null; // the pad key waiting for a new keyboard key
  function renderKeys() {
    keysPanel.replaceChildren();
    const table = el('table');
    for (const k of KEYS) {
      const row = el('tr');
      row.append(el('th', {}, LABELS[k]));
      const codes = el('td', { 'data-key': k }, rebinding === k ? 'press a key…' : keyboard[k].join(' / ') || '–');
      const change = el('button', { type: 'button', 'data-rebind': k }, 'change');
      change.addEventListener('click', () => { rebinding = k; renderKeys(); });
      const cell = el('td');
      cell.append(change);
      row.append(codes, cell);
      table.append(row);
    }
    const reset = el('button', { type: 'button' }, 'defaults');
    reset.addEventListener('click', () => { keyboard = JSON.parse(JSON.stringify(DEFAULT_KEYBOARD)); rebinding = null; saveKeyboard(); renderKeys(); });
    keysPanel.append(table, el('p', {}, 'Gamepad: d-pad or left stick, A, B, start, select.'), reset);
  }
  keysButton.addEventListener('click', () => {
    keysPanel.hidden = !keysPanel.hidden;
    keysButton.setAttribute('aria-expanded', String(!keysPanel.hidden));
    rebinding = null;
    renderKeys();
  });

  // Touch buttons: a D-pad and A/B/start/select, on coarse-pointer (touch) screens.
  const pad = el('div', { id: 'pad', hidden: '' });
  const dpad = el('div', { class: 'dpad' });
  for (const k of ['up', 'left', 'right', 'down']) dpad.append(el('div', { class: 'pad-key ' + k, 'data-pad': k }, LABELS[k]));
  const face = el('div', { class: 'face' });
  for (const k of ['b', 'a']) face.append(el('div', { class: 'pad-key ' + k, 'data-pad': k }, LABELS[k]));
  const menu = el('div', { class: 'menu' });
  for (const k of ['select', 'start']) menu.append(el('div', { class: 'pad-key ' + k, 'data-pad': k }, LABELS[k]));
  pad.append(dpad, menu, face);
  stage.append(pad);
  const coarse = window.matchMedia ? window.matchMedia('(pointer: coarse)') : null;

  // --- the pad's state from every source ----------------------------------------------------
  const held = new Set(); // keyboard codes held
  const pointers = new Map(); // touch pointer id -> pad key
  let gamepadBits = 0;

  function keyboardBits() {
    let bits = 0;
    for (const code of held) { const k = codeToKey(code); if (k) bits |= bit(k); }
    return bits;
  }
  function touchBits() {
    let bits = 0;
    for (const k of pointers.values()) if (k) bits |= bit(k);
    return bits;
  }

  let socket = null; // the connection the keys go to
  // A take-over connection on its way to replace `socket`, which carries the keys until it
  // opens (see 'playpod-silent' below).
  let successor = null;
  let lastSent = 0;
  function update() {
    const bits = keyboardBits() | gamepadBits | touchBits();
    state.bits = bits;
    for (const e of pad.querySelectorAll('[data-pad]')) e.classList.toggle('pressed', (bits & bit(e.dataset.pad)) !== 0);
    if (bits === lastSent || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(new Uint8Array([bits]));
    lastSent = bits;
    state.sent++;
    state.lastSent = bits;
  }
  function releaseAll() {
    held.clear();
    pointers.clear();
    gamepadBits = 0;
    update();
  }

  // --- the input channel ------------------------------------------------------------------
  let backoff = 250;
  let retry = null;
  // Whether this page held its player's slot when its connection last broke: then every
  // attempt comes back as the controller (the pod may not have noticed the break yet, and
  // notices only within --input-timeout), not just the first, which fails while the network
  // is still down.
  let holding = false;
  function showBadge() {
    if (!state.player) { badge.textContent = 'spectator'; badge.title = ''; badge.className = ''; return; }
    let status = 'connecting…';
    if (state.connected) status = 'connected';
    else if (state.closeReason && !retry) status = state.closeReason;
    // The pod's own words name its display and X extensions: they go in the tooltip.
    else if (state.trouble) status = 'keys not reaching the game · retrying…';
    badge.textContent = `player ${state.player} · ${status}`;
    badge.title = state.connected ? '' : (state.trouble || '');
    badge.className = state.connected ? 'on' : 'off';
    for (const b of [choose1, choose2, watch]) b.classList.toggle('chosen', (b.dataset.player || null) === state.player);
  }
  // Closes a connection without hearing from it again: a dead one never answers the closing
  // handshake.
  function drop(ws) {
    ws.onopen = null; ws.onmessage = null; ws.onclose = null;
    ws.close(1000, 'player left');
  }
  function disconnect() {
    clearTimeout(retry);
    retry = null;
    if (successor) { drop(successor); successor = null; }
    if (socket) { drop(socket); socket = null; }
    state.connected = false;
  }
  // `replace`: the new connection takes over from `socket`, which stays in use until it opens.
  function connect(takeover, replace = false) {
    if (!replace) disconnect();
    if (!state.player) { showBadge(); return; }
    if (window.playpodEnded) { state.closeReason = window.playpodEnded; showBadge(); return; }
    state.closeCode = null; state.closeReason = null;
    const ws = new WebSocket(wsBase + 'input/' + state.player + (takeover ? '?takeover=1' : ''));
    if (replace) successor = ws; else socket = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (successor === ws) {
        // The pod has released the old connection's keys and closed it (4002): from here on
        // the keys go this way, the whole state first.
        successor = null;
        if (socket) drop(socket);
        socket = ws;
      }
      holding = true;
      backoff = 250;
      state.connected = true;
      state.trouble = null;
      lastSent = 0; // the server starts with no key held
      showBadge();
      update();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      try {
        const reply = JSON.parse(ev.data);
        if (typeof reply.seat === 'string') {
          // The pod's proof that this page holds the player's controls: the video's clock
          // probes show it (a player's slow link lowers the stream's bitrate).
          state.seat = reply.seat;
          window.dispatchEvent(new Event('playpod-seat'));
        }
        if (reply.error) {
          state.errors++; state.lastError = reply.error; console.warn('input:', reply.error);
          // A dropped message may have been the last change (a release): send the whole
          // state again once the limit has room.
          if (reply.error.startsWith('rate limit')) setTimeout(() => { lastSent = -1; update(); }, 250);
        }
      } catch (_) { /* not ours */ }
    };
    ws.onclose = (ev) => {
      if (successor === ws) {
        // The replacement failed: the old connection goes too, and the page reconnects as
        // after any break (as the controller).
        successor = null;
        if (socket) drop(socket);
      }
      socket = null;
      state.connected = false;
      state.seat = null;
      state.closeCode = ev.code;
      state.closeReason = ev.reason || null;
      if (ev.code === 4003) {
        state.trouble = ev.reason || "the game's display cannot be reached";
        console.warn('input:', state.trouble);
      }
      // The game has ended (4004): stay off for good. The slot has a controller (4001) or
      // another page took it over (4002): stay off until the user asks. Anything else
      // reconnects with backoff.
      if (window.playpodSessionEnded && window.playpodSessionEnded(ev)) {
        state.closeReason = window.playpodEnded;
        showBadge();
        return;
      }
      if (ev.code === 4001 || ev.code === 4002) {
        holding = false;
        showBadge();
        // In words for the page's user (the pod's reason tells other clients to add
        // ?takeover=1), short enough for one line on a phone.
        offerTakeover(ev.code === 4001 ? 'taken by another page' : 'another page took over');
        return;
      }
      state.reconnects++;
      retry = setTimeout(() => { retry = null; connect(holding); }, backoff);
      backoff = Math.min(backoff * 2, 5000);
      showBadge();
    };
    showBadge();
  }
  // The video found its connection silent (nothing for 5 s): after a network change (Wi-Fi
  // switched, a laptop asleep) this one is most likely dead too, but it cannot tell: the pod's
  // pings never reach the page, nothing else comes while the keys are right, and TCP gives up
  // only minutes later, all that time swallowing the keys. So a new connection takes over the
  // slot (the pod may not have noticed the old one die) and sends the keys held; until it
  // opens, the keys still go the old way, in case that one was fine. The old one's end, and the
  // pod's 4002 for it, are no news then.
  window.addEventListener('playpod-silent', () => {
    if (!state.player || successor || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.onclose = null;
    state.reconnects++;
    connect(true, true);
  });
  function offerTakeover(reason) {
    const take = el('button', { type: 'button', id: 'takeover' }, 'take over');
    take.addEventListener('click', () => { take.remove(); connect(true); });
    badge.textContent = `player ${state.player} · ${reason} `;
    badge.append(take);
  }

  function choose(player, takeover = false) {
    state.player = player === '1' || player === '2' ? player : null;
    const url = new URL(location.href);
    if (state.player) url.searchParams.set('player', state.player); else url.searchParams.delete('player');
    history.replaceState(null, '', url);
    releaseAll();
    holding = false;
    state.trouble = null;
    connect(takeover);
    pad.hidden = !(state.player && coarse && coarse.matches);
    state.touch = !pad.hidden;
  }
  for (const b of [choose1, choose2, watch]) b.addEventListener('click', (ev) => { ev.currentTarget.blur(); choose(b.dataset.player); });

  // --- sources --------------------------------------------------------------------------
  window.addEventListener('keydown', (ev) => {
    if (rebinding) {
      ev.preventDefault();
      if (ev.code !== 'Escape') {
        for (const k of KEYS) keyboard[k] = keyboard[k].filter((c) => c !== ev.code);
        keyboard[rebinding] = [ev.code];
        saveKeyboard();
      }
      rebinding = null;
      renderKeys();
      return;
    }
    if (!state.player || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (!codeToKey(ev.code)) return;
    ev.preventDefault();
    // A repeat of a key we hold changes nothing; one we do not hold (released below while
    // still down) presses it again.
    if (ev.repeat && held.has(ev.code)) return;
    held.add(ev.code);
    update();
  });
  window.addEventListener('keyup', (ev) => {
    if (held.delete(ev.code)) { ev.preventDefault(); update(); }
    // macOS sends no keyup for a key let go while Command is down: when Command comes up,
    // nothing the keyboard held can be trusted; a key still down comes back with its repeat.
    if (ev.key === 'Meta' && held.size) { held.clear(); update(); }
  });
  window.addEventListener('blur', releaseAll);
  document.addEventListener('visibilitychange', () => { if (document.hidden) releaseAll(); });

  // Gamepads are polled once per animation frame while any is connected.
  let polling = false;
  function pollGamepads() {
    const pads = navigator.getGamepads ? [...navigator.getGamepads()].filter(Boolean) : [];
    state.gamepads = pads.length;
    let bits = 0;
    for (const gp of pads) {
      if (gp.mapping !== 'standard' && gp.buttons.length < 16) continue;
      for (const [k, i] of Object.entries(PAD_BUTTONS)) if (gp.buttons[i] && gp.buttons[i].pressed) bits |= bit(k);
      const [x = 0, y = 0] = gp.axes;
      if (x < -DEAD_ZONE) bits |= bit('left');
      if (x > DEAD_ZONE) bits |= bit('right');
      if (y < -DEAD_ZONE) bits |= bit('up');
      if (y > DEAD_ZONE) bits |= bit('down');
    }
    if (document.hidden || !document.hasFocus()) bits = 0;
    if (bits !== gamepadBits) { gamepadBits = bits; update(); }
    if (pads.length) requestAnimationFrame(pollGamepads); else polling = false;
  }
  window.addEventListener('gamepadconnected', () => { if (!polling) { polling = true; requestAnimationFrame(pollGamepads); } });
  window.addEventListener('gamepaddisconnected', () => { if (!polling) { gamepadBits = 0; update(); } });

  // Touch: each pointer presses the button under it, following the finger across buttons.
  const padKeyAt = (x, y) => {
    const e = document.elementFromPoint(x, y);
    return e && e.dataset && e.dataset.pad ? e.dataset.pad : null;
  };
  pad.addEventListener('pointerdown', (ev) => {
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    pointers.set(ev.pointerId, padKeyAt(ev.clientX, ev.clientY));
    update();
  });
  pad.addEventListener('pointermove', (ev) => {
    if (!pointers.has(ev.pointerId)) return;
    const k = padKeyAt(ev.clientX, ev.clientY);
    if (k !== pointers.get(ev.pointerId)) { pointers.set(ev.pointerId, k); update(); }
  });
  for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
    pad.addEventListener(type, (ev) => { if (pointers.delete(ev.pointerId)) update(); });
  }
  if (coarse) coarse.addEventListener('change', () => { pad.hidden = !(state.player && coarse.matches); state.touch = !pad.hidden; });

  choose(new URLSearchParams(location.search).get('player'));
})();
