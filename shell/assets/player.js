// playpod web player: H.264 over WebSocket, decoded with WebCodecs, drawn on a canvas.
// Wire format: a JSON config text message, then binary messages with a 16-byte little-endian
// header (u8 kind, u8 flags bit0=keyframe, u16 reserved, u32 sequence, u64 capture time in µs
// since the Unix epoch) followed by one Annex-B access unit.
'use strict';

(() => {
  // The page's directory (`/play/TOKEN/`, also when opened as `.../index.html`).
  const base = location.pathname.replace(/[^/]*$/, '');
  const wsBase = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base;
  const canvas = document.getElementById('screen');
  const ctx = canvas.getContext('2d', { alpha: false, desynchronized: true });
  const statsEl = document.getElementById('stats');
  const messageEl = document.getElementById('message');
  const qualityEl = document.getElementById('quality');

  // Everything the page measures; tests and the overlay read it.
  // `?rendition=low` asks for the smaller picture whatever the link (to spare a metered
  // connection); without it the pod moves this page there only while its link cannot carry
  // the stream.
  const askLow = new URLSearchParams(location.search).get('rendition') === 'low';
  const LOW_NOTICE = 'Slow connection: smaller picture';
  const stats = (window.playpodStats = {
    connected: false, codec: null, width: 0, height: 0,
    messages: 0, bytes: 0, keyframes: 0, framesDecoded: 0, framesDrawn: 0, droppedFrames: 0,
    decodeErrors: 0, reconnects: 0, decodeQueue: 0, fps: 0, kbps: 0, latencyMs: null,
    clockOffsetMs: null, clockRttMs: null, ended: null, unsupported: null,
    // The pod's bitrate target and the bitrate set (kbit/s), whether this page's own link was
    // seen too slow for the stream lately, and what the page says of it (empty: nothing).
    bitrateKbps: null, fullKbps: null, slowLink: false, quality: '',
    // 'low' while the pod sends this page its low rendition (half the width and height: its
    // link could not carry the stream while players play), else 'full'.
    rendition: 'full',
    // Frames the pod sent this page that never came (it fell behind and skipped to a keyframe).
    missedFrames: 0,
    // The pod sends a frame when the picture changes, and one a second while it does not: a
    // slow stream with nothing missed is a still picture, not a slow connection.
    still: false,
  });
  let lastSeq = null;
  let lastMessageAt = 0;

  // The status region stays in the page (empty, so invisible) for screen readers to announce
  // what appears in it: a region added or unhidden together with its text is often not read.
  function showMessage(text) {
    messageEl.textContent = text;
  }

  // A socket the server closes with 4004 means the game has ended: the session is over, and
  // no socket of the page (video, audio, input) reconnects after that. Every socket's close
  // handler asks this; true once the session has ended.
  window.playpodEnded = null;
  window.playpodSessionEnded = (ev) => {
    if (ev.code === 4004 && !window.playpodEnded) {
      window.playpodEnded = ev.reason || 'the game has ended';
      stats.ended = window.playpodEnded;
      showMessage(window.playpodEnded[0].toUpperCase() + window.playpodEnded.slice(1) + '.');
      window.dispatchEvent(new Event('playpod-ended'));
    }
    return window.playpodEnded !== null;
  };

  // Whether the session is gone: its page answers 404 (its pod was stopped and its route
  // removed, or the address now serves another session). No answer at all (a restart, a
  // network cut) is not gone: the page keeps trying.
  async function sessionGone() {
    try {
      const r = await fetch(location.href, { cache: 'no-store' });
      return r.status === 404;
    } catch (_) {
      return false;
    }
  }

  const nowMicros = () => (performance.timeOrigin + performance.now()) * 1000;

  if (!window.isSecureContext || typeof VideoDecoder === 'undefined') {
    showMessage(window.isSecureContext
      ? 'This browser has no WebCodecs VideoDecoder. Use a recent Chromium, Chrome, Edge or Safari.'
      : 'The video decoder (WebCodecs) only works on a secure page. Open this page over HTTPS ' +
        '(start playpod with --tls-self-signed or --tls-cert/--tls-key), or as http://localhost / http://127.0.0.1 on this machine.');
    return;
  }

  // The server's clock minus ours (µs), from the clock probe with the shortest round trip among
  // the last few: capture times are on the server's clock.
  let clockOffsetUs = 0;
  const probes = [];
  function onPong(msg) {
    showFit(msg);
    const now = performance.timeOrigin + performance.now();
    const rtt = now - msg.pong;
    if (!(rtt >= 0) || rtt > 10000) return;
    probes.push({ rtt, offsetMs: msg.serverUs / 1000 - (msg.pong + rtt / 2) });
    if (probes.length > 8) probes.shift();
    const best = probes.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    clockOffsetUs = best.offsetMs * 1000;
    stats.clockOffsetMs = Math.round(best.offsetMs * 10) / 10;
    stats.clockRttMs = Math.round(best.rtt * 10) / 10;
  }

  // One encoder feeds every viewer: the pod lowers its bitrate while a player's link (any
  // viewer's while no player is connected) cannot carry the stream. Say which it is.
  function showFit(msg) {
    if (!(msg.fullKbps > 0) || !(msg.bitrateKbps >= 0)) return;
    stats.bitrateKbps = msg.bitrateKbps;
    stats.fullKbps = msg.fullKbps;
    stats.slowLink = msg.slowLink === true;
    const lowered = msg.bitrateKbps < 0.95 * msg.fullKbps;
    let text = '';
    if (stats.rendition === 'low') text = askLow ? '' : LOW_NOTICE;
    else if (stats.slowLink) text = lowered ? 'Slow connection: picture quality lowered' : 'Slow connection: frames skipped';
    else if (lowered) text = 'Picture quality lowered for a slow connection elsewhere';
    sayQuality(text, lowered ? `stream at ${msg.bitrateKbps} of ${msg.fullKbps} kbit/s` : '');
  }
  function sayQuality(text, title = '') {
    if (text === stats.quality) return;
    stats.quality = text;
    qualityEl.textContent = text;
    qualityEl.hidden = !text;
    qualityEl.title = title;
  }
  const probeClock = (socket) => {
    if (socket.readyState === WebSocket.OPEN) {
      // The page's role goes with each probe, with the seat its input connection was given:
      // a player's slow link lowers the stream's bitrate, a spectator's only while no player
      // is connected.
      const input = window.playpodInput || {};
      const player = (input.connected && Number(input.player)) || null;
      const probe = { ping: performance.timeOrigin + performance.now(), player };
      if (player && input.seat) probe.seat = input.seat;
      socket.send(JSON.stringify(probe));
    }
  };

  let decoder = null;
  let waitingForKey = true;
  let pending = null; // newest decoded frame not yet drawn
  // One drawing callback at a time: a hidden page gets no animation frames, and one asked for
  // per decoded frame would pile up for as long as it stays hidden.
  let drawAsked = false;
  const latencies = [];

  function draw() {
    drawAsked = false;
    const frame = pending;
    pending = null;
    if (!frame) return;
    if (canvas.width !== frame.displayWidth || canvas.height !== frame.displayHeight) {
      canvas.width = frame.displayWidth;
      canvas.height = frame.displayHeight;
    }
    ctx.drawImage(frame, 0, 0, frame.displayWidth, frame.displayHeight);
    frame.close();
    stats.framesDrawn++;
  }

  function onFrame(frame) {
    stats.framesDecoded++;
    // Measurement harnesses (glass to glass) look at every decoded frame here.
    if (typeof window.playpodFrameHook === 'function') {
      try { window.playpodFrameHook(frame); } catch (e) { console.warn('frame hook', e); }
    }
    latencies.push((nowMicros() + clockOffsetUs - frame.timestamp) / 1000);
    if (latencies.length > 120) latencies.shift();
    // A frame replaced before it was drawn is dropped, unless the page is hidden: then none is
    // drawn, as none is seen.
    if (pending) { pending.close(); if (!document.hidden) stats.droppedFrames++; }
    pending = frame;
    if (!drawAsked) {
      drawAsked = true;
      requestAnimationFrame(draw);
    }
  }

  // Asks the pod for a fresh keyframe, at most once a second (the pod honours one a second per
  // viewer: every IDR goes to every viewer).
  let lastKeyRequest = -Infinity;
  function requestKeyframe(socket) {
    const now = performance.now();
    if (now - lastKeyRequest < 1000 || socket.readyState !== WebSocket.OPEN) return;
    lastKeyRequest = now;
    socket.send('keyframe');
  }

  // A browser that cannot decode the stream says so once and stops, rather than restarting its
  // decoder on every frame.
  let unsupported = false;
  function refuse(codec, socket) {
    unsupported = true;
    stats.unsupported = codec;
    if (decoder && decoder.state !== 'closed') decoder.close();
    decoder = null;
    showMessage(`This browser cannot decode the stream's video (${codec}). ` +
      'Use a recent Chromium, Chrome, Edge or Safari.');
    socket.close(1000, 'codec not supported');
  }

  // Decoder errors in a row restart it after a growing pause (a broken frame: at once; a decoder
  // that fails on everything: up to 5 s apart).
  let errorsInRow = 0;
  const FAILING = 4; // errors in a row that the page tells the user about
  function newDecoder(config, socket) {
    if (decoder && decoder.state !== 'closed') decoder.close();
    const dec = new VideoDecoder({
      output: (frame) => {
        if (errorsInRow >= FAILING) showMessage('');
        errorsInRow = 0;
        onFrame(frame);
      },
      error: (e) => {
        stats.decodeErrors++;
        console.warn('decoder error', e);
        if (decoder !== dec || unsupported) return;
        waitingForKey = true;
        const pause = errorsInRow === 0 ? 0 : Math.min(250 * 2 ** errorsInRow, 5000);
        errorsInRow++;
        if (errorsInRow === FAILING) {
          showMessage("This browser's video decoder keeps failing on the stream; still trying…");
        }
        setTimeout(() => {
          if (decoder !== dec || socket.readyState !== WebSocket.OPEN) return;
          newDecoder(config, socket);
          requestKeyframe(socket);
        }, pause);
      },
    });
    decoder = dec;
    const settings = { codec: config.codec, optimizeForLatency: true, hardwareAcceleration: 'no-preference' };
    try {
      dec.configure(settings);
    } catch (e) {
      console.warn('decoder configuration refused', e);
      refuse(config.codec, socket);
      return;
    }
    waitingForKey = true;
    VideoDecoder.isConfigSupported(settings).then((r) => {
      if (!r.supported && decoder === dec) refuse(config.codec, socket);
    }, () => { if (decoder === dec) refuse(config.codec, socket); });
  }

  let backoff = 250;
  // Reconnections in a row that did not open: from the second, ask whether the session is gone.
  let failures = 0;
  // The pod sends a frame at least once a second: nothing for longer than this on an open
  // socket is a connection that died without closing (a NAT timeout, a network change).
  const SILENT_MS = 5000;
  // The open video socket, for a probe out of turn when the page becomes a player.
  let current = null;
  window.addEventListener('playpod-seat', () => { if (current) probeClock(current); });
  function connect() {
    if (window.playpodEnded || unsupported) return;
    const socket = new WebSocket(wsBase + 'video');
    socket.binaryType = 'arraybuffer';
    let config = null;
    let prober = null;
    let opened = false;
    lastSeq = null; // a new connection starts at a fresh keyframe
    let heardAt = performance.now();
    socket.onopen = () => {
      opened = true;
      failures = 0;
      backoff = 250;
      heardAt = performance.now();
      current = socket;
      if (askLow) socket.send(JSON.stringify({ rendition: 'low' }));
      probeClock(socket);
      prober = setInterval(() => {
        if (performance.now() - heardAt > SILENT_MS) {
          console.warn(`nothing from the video socket for ${SILENT_MS / 1000} s: reconnecting`);
          // Nothing may ever answer its closing handshake (Chromium waits a minute for it
          // before the close event): the page goes on without this socket at once.
          const closed = socket.onclose;
          socket.onclose = null;
          socket.onmessage = null;
          socket.close(4000, 'silent');
          closed({ code: 4000, reason: 'silent' });
          // The page's other sockets went the same way, most likely, and cannot tell by
          // themselves: the input and audio replace theirs on this.
          window.dispatchEvent(new Event('playpod-silent'));
          return;
        }
        probeClock(socket);
      }, 1000);
    };
    socket.onmessage = (ev) => {
      heardAt = performance.now();
      if (typeof ev.data === 'string') {
        const msg = JSON.parse(ev.data);
        if ('pong' in msg) { onPong(msg); return; }
        // The first message, or the pod moving this page to another rendition of the stream
        // (its frames are numbered apart, and start with a keyframe).
        config = msg;
        stats.codec = config.codec; stats.width = config.width; stats.height = config.height;
        stats.rendition = config.rendition === 'low' ? 'low' : 'full';
        lastSeq = null;
        if (stats.rendition === 'low') sayQuality(askLow ? '' : LOW_NOTICE);
        else if (stats.quality === LOW_NOTICE) sayQuality('');
        newDecoder(config, socket);
        stats.connected = true;
        showMessage('');
        window.dispatchEvent(new Event('playpod-connected'));
        return;
      }
      if (!decoder || decoder.state !== 'configured') return;
      const view = new DataView(ev.data);
      if (view.byteLength < 16 || view.getUint8(0) !== 1) return;
      const key = (view.getUint8(1) & 1) === 1;
      const seq = view.getUint32(4, true);
      const step = lastSeq === null ? 1 : (seq - lastSeq) >>> 0; // u32 positions wrap
      if (step > 1 && step < 1e6) stats.missedFrames += step - 1;
      lastSeq = seq;
      lastMessageAt = performance.now();
      stats.messages++;
      stats.bytes += view.byteLength;
      if (key) stats.keyframes++;
      if (waitingForKey && !key) {
        // Still waiting (the request, or its IDR, may have been lost): ask again, paced.
        if (stats.framesDecoded > 0 || stats.keyframes > 0) requestKeyframe(socket);
        return;
      }
      // A decoder falling far behind (a slow device) restarts from a fresh keyframe.
      if (decoder.decodeQueueSize > 30) {
        stats.droppedFrames += decoder.decodeQueueSize;
        newDecoder(config, socket);
        requestKeyframe(socket);
        return;
      }
      waitingForKey = false;
      const captureUs = Number(view.getBigUint64(8, true));
      decoder.decode(new EncodedVideoChunk({
        type: key ? 'key' : 'delta',
        timestamp: captureUs,
        data: new Uint8Array(ev.data, 16),
      }));
    };
    socket.onclose = (ev) => {
      clearInterval(prober);
      if (current === socket) current = null;
      sayQuality('');
      stats.rendition = 'full';
      stats.connected = false;
      if (decoder && decoder.state !== 'closed') decoder.close();
      decoder = null;
      if (window.playpodSessionEnded(ev) || unsupported) return;
      stats.reconnects++;
      showMessage(`Disconnected; reconnecting in ${(backoff / 1000).toFixed(1)} s…`);
      const wait = backoff;
      backoff = Math.min(backoff * 2, 5000);
      if (!opened && ++failures >= 2) {
        sessionGone().then((gone) => {
          if (gone) window.playpodSessionEnded({ code: 4004, reason: 'the session has ended' });
          else setTimeout(connect, wait);
        });
        return;
      }
      setTimeout(connect, wait);
    };
  }

  let last = { t: performance.now(), frames: 0, bytes: 0, missed: 0 };
  setInterval(() => {
    const t = performance.now();
    const dt = (t - last.t) / 1000;
    stats.fps = Math.round((stats.framesDecoded - last.frames) / dt);
    stats.kbps = Math.round(((stats.bytes - last.bytes) * 8) / 1000 / dt);
    stats.decodeQueue = decoder ? decoder.decodeQueueSize : 0;
    // A frame at least every second keeps coming while the picture is still; none for 2 s
    // is a stalled connection.
    stats.still = stats.connected && stats.framesDecoded > 0 && stats.fps <= 2 &&
      t - lastMessageAt < 2000 && stats.missedFrames === last.missed && stats.decodeQueue === 0;
    last = { t, frames: stats.framesDecoded, bytes: stats.bytes, missed: stats.missedFrames };
    const sorted = [...latencies].sort((a, b) => a - b);
    stats.latencyMs = sorted.length ? Math.round(sorted[Math.floor(sorted.length / 2)] * 10) / 10 : null;
    renderOverlay();
  }, 500);

  // The overlay: click it to fold it to one word and back; `?overlay=0` starts folded. The
  // choice is remembered in this browser.
  const OVERLAY = 'playpod.overlay';
  const storedOverlay = (() => { try { return localStorage.getItem(OVERLAY); } catch { return null; } })();
  let overlayOn = (new URLSearchParams(location.search).get('overlay') ?? storedOverlay ?? '1') !== '0';
  statsEl.title = 'click to hide or show the figures';
  statsEl.addEventListener('click', () => {
    overlayOn = !overlayOn;
    try { localStorage.setItem(OVERLAY, overlayOn ? '1' : '0'); } catch { /* private mode */ }
    renderOverlay();
  });
  function renderOverlay() {
    if (!overlayOn) { statsEl.textContent = 'stats'; return; }
    statsEl.textContent =
      `${stats.connected ? stats.width + 'x' + stats.height + ' ' + stats.codec : 'connecting…'}\n` +
      `${stats.fps} fps${stats.still ? ' (picture still)' : ''}  ${stats.kbps} kbit/s` +
      `${stats.bitrateKbps !== null && stats.bitrateKbps < stats.fullKbps ? ` (target ${stats.bitrateKbps} of ${stats.fullKbps})` : ''}\n` +
      `latency ${stats.latencyMs ?? '–'} ms capture→decoded` +
      `${stats.clockRttMs === null ? '' : ` (clock ±${(stats.clockRttMs / 2).toFixed(1)} ms)`}\n` +
      `queue ${stats.decodeQueue}  ` +
      `dropped ${stats.droppedFrames}  errors ${stats.decodeErrors}`;
  }

  // Full screen: the button beside the sound button, or a double click on the picture. The
  // whole page goes, so the touch pad and the figures come along. Hidden where the browser
  // cannot (an iPhone's Safari).
  const fullEl = document.getElementById('full');
  stats.fullScreen = false;
  if (document.fullscreenEnabled && typeof document.documentElement.requestFullscreen === 'function') {
    const toggleFull = async () => {
      try {
        if (document.fullscreenElement) await document.exitFullscreen();
        else await document.documentElement.requestFullscreen({ navigationUI: 'hide' });
      } catch (e) {
        console.warn('full screen refused', e);
      }
    };
    const renderFull = () => {
      stats.fullScreen = document.fullscreenElement !== null;
      fullEl.textContent = stats.fullScreen ? 'exit full screen' : 'full screen';
    };
    fullEl.addEventListener('click', toggleFull);
    canvas.addEventListener('dblclick', toggleFull);
    document.addEventListener('fullscreenchange', renderFull);
    renderFull();
    fullEl.hidden = false;
  }

  // The screen stays on while the game is shown, as it does for a <video> but not for a canvas:
  // a spectator, or a player on a gamepad, touches nothing for minutes. The browser lets the
  // lock go whenever the page is hidden; it is taken again when the page is back, and let go
  // for good when the session ends.
  let wakeLock = null;
  let asking = false;
  stats.wakeLock = 'wakeLock' in navigator ? 'none' : 'unsupported';
  async function keepScreenOn() {
    if (stats.wakeLock === 'unsupported' || wakeLock || asking || document.hidden ||
        !stats.connected || window.playpodEnded) return;
    asking = true;
    try {
      const lock = await navigator.wakeLock.request('screen');
      wakeLock = lock;
      stats.wakeLock = 'held';
      lock.addEventListener('release', () => {
        if (wakeLock === lock) wakeLock = null;
        stats.wakeLock = 'released';
      });
    } catch (e) {
      stats.wakeLock = `refused (${e.name})`;
    } finally {
      asking = false;
    }
  }
  window.addEventListener('playpod-connected', keepScreenOn);
  document.addEventListener('visibilitychange', keepScreenOn);
  window.addEventListener('playpod-ended', () => { if (wakeLock) wakeLock.release(); });

  showMessage('Connecting…');
  connect();
})();
