// playpod audio: the game's sound over WebSocket (.../audio), Opus decoded with WebCodecs'
// AudioDecoder, played by an AudioWorklet (audio-worklet.js) from a small jitter buffer kept in
// step with the video. Wire: a JSON config text message {"codec":"opus","sampleRate":48000,
// "channels":2}, text state messages {"audio":"ok"|"down"}, and binary messages with the 16-byte
// media header (kind 2) followed by one Opus packet. Browsers only start sound after a user
// gesture: decoding starts at once, playback on the first click, key or touch.
'use strict';

(() => {
  // The page's directory (`/play/TOKEN/`, also when opened as `.../index.html`).
  const base = location.pathname.replace(/[^/]*$/, '');
  const wsBase = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base;
  const button = document.getElementById('audio');
  const nowMicros = () => (performance.timeOrigin + performance.now()) * 1000;

  // What the page measures; tests read it.
  const stats = (window.playpodAudioStats = {
    state: 'connecting', // connecting | ok | down | off | unsupported
    packets: 0, decoded: 0, decodeErrors: 0, reconnects: 0,
    playing: false, muted: false, bufferedMs: 0, underruns: 0, silences: 0, droppedMs: 0, stretchedMs: 0,
    delayMs: null, skewMs: null, outputLatencyMs: null,
  });

  let ctx = null;
  let node = null;
  let gain = null;
  let decoder = null;
  let closedForGood = false;
  // The decoder stamps its outputs on a timeline of its own (Chromium: the first packet's
  // timestamp plus the audio decoded since), which knows nothing of the silences the pod does
  // not send. So each packet goes in stamped with its index (10 ms apart) and its output is
  // matched back to the packet's capture time by that index.
  const PACKET_US = 10000;
  let captures = new Map(); // packet index -> capture time, µs
  let nextIndex = 0;

  function render() {
    if (!button) return;
    let text;
    if (stats.state === 'unsupported') text = 'no audio (this browser cannot decode it)';
    else if (stats.state === 'off' || stats.state === 'down' || stats.state === 'ended') text = 'no audio';
    else if (stats.state === 'connecting') text = 'audio…';
    else if (!ctx || ctx.state !== 'running') text = '🔇 click for sound';
    else text = stats.muted ? '🔇 unmute' : '🔊 mute';
    if (button.textContent !== text) button.textContent = text;
    button.classList.toggle('off', stats.state !== 'ok');
  }

  if (!window.isSecureContext || typeof AudioDecoder === 'undefined' || typeof AudioWorkletNode === 'undefined') {
    stats.state = 'unsupported';
    render();
    return;
  }

  // Starts (or resumes) sound; must run inside a user gesture.
  async function startSound() {
    if (ctx) {
      if (ctx.state !== 'running') await ctx.resume();
      render();
      return;
    }
    ctx = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
    const resumed = ctx.resume();
    await ctx.audioWorklet.addModule(base + 'audio-worklet.js');
    node = new AudioWorkletNode(ctx, 'playpod-audio', { numberOfInputs: 0, outputChannelCount: [2] });
    gain = new GainNode(ctx, { gain: stats.muted ? 0 : 1 });
    node.connect(gain).connect(ctx.destination);
    node.port.onmessage = (ev) => {
      const m = ev.data;
      stats.bufferedMs = Math.round(m.bufferedMs * 10) / 10;
      stats.underruns = m.underruns;
      stats.silences = m.silences;
      stats.droppedMs = Math.round(m.droppedMs);
      stats.stretchedMs = Math.round(m.stretchedMs);
      stats.playing = m.playing;
      stats.delayMs = m.delayUs === null ? null : Math.round(m.delayUs / 100) / 10;
      const video = window.playpodStats && window.playpodStats.latencyMs;
      stats.skewMs = stats.delayMs === null || video == null ? null : Math.round((stats.delayMs - video) * 10) / 10;
    };
    await resumed;
    ctx.onstatechange = render;
    render();
  }

  function onGesture(ev) {
    // The sound button handles its own clicks (start, then mute and unmute).
    if (ev && button && button.contains(ev.target)) return;
    startSound().catch((e) => console.warn('cannot start sound', e));
  }
  // Touch screens grant the right to start sound on the end of a tap, not its start.
  for (const type of ['pointerdown', 'pointerup', 'keydown', 'touchstart', 'touchend', 'click']) {
    window.addEventListener(type, onGesture, { capture: true, passive: true });
  }
  if (button) {
    button.addEventListener('click', (ev) => {
      ev.stopPropagation();
      if (ctx && ctx.state === 'running') {
        stats.muted = !stats.muted;
        if (gain) gain.gain.value = stats.muted ? 0 : 1;
        render();
      } else {
        startSound().catch((e) => console.warn('cannot start sound', e));
      }
    });
  }

  // The context's clock against the wall clock, and the video's delay, for the worklet.
  setInterval(() => {
    if (!node || !ctx || ctx.state !== 'running') return;
    const ts = ctx.getOutputTimestamp();
    stats.outputLatencyMs = Math.round(((ctx.outputLatency || 0) + (ctx.baseLatency || 0)) * 10000) / 10;
    if (ts.contextTime > 0) {
      // contextTime is the sample leaving the output device at performanceTime: the mapping
      // already holds the output latency.
      node.port.postMessage({
        sync: {
          contextTime: ts.contextTime,
          wallUs: (performance.timeOrigin + ts.performanceTime) * 1000,
          outputLatency: 0,
        },
      });
    }
    const video = window.playpodStats && window.playpodStats.latencyMs;
    node.port.postMessage({ videoDelayUs: video == null ? null : video * 1000 });
  }, 250);

  function onData(data) {
    stats.decoded++;
    const index = Math.round(data.timestamp / PACKET_US);
    const captureUs = captures.get(index);
    for (const k of captures.keys()) { if (k > index) break; captures.delete(k); }
    // Sound decoded while the context is not playing (before the first click, a suspended
    // tab) is dropped here: the worklet only trims its buffer while it runs.
    if (!node || captureUs === undefined || ctx.state !== 'running') { data.close(); return; }
    const frames = data.numberOfFrames;
    const left = new Float32Array(frames);
    const right = new Float32Array(frames);
    data.copyTo(left, { planeIndex: 0, format: 'f32-planar' });
    data.copyTo(right, { planeIndex: data.numberOfChannels > 1 ? 1 : 0, format: 'f32-planar' });
    node.port.postMessage({ chunk: { captureUs, left, right } }, [left.buffer, right.buffer]);
    data.close();
  }

  // A decoder that fails again and again restarts after a growing pause; one the browser
  // cannot configure at all leaves the page without sound, saying so.
  let errorsInRow = 0;
  function newDecoder(config) {
    if (decoder && decoder.state !== 'closed') decoder.close();
    captures = new Map();
    nextIndex = 0;
    const dec = new AudioDecoder({
      output: (data) => { errorsInRow = 0; onData(data); },
      error: (e) => {
        stats.decodeErrors++;
        console.warn('audio decoder error', e);
        if (decoder !== dec) return;
        decoder = null;
        const pause = errorsInRow === 0 ? 0 : Math.min(250 * 2 ** errorsInRow, 5000);
        errorsInRow++;
        setTimeout(() => { if (!decoder && stats.state !== 'unsupported' && !closedForGood) newDecoder(config); }, pause);
      },
    });
    decoder = dec;
    const settings = { codec: config.codec, sampleRate: config.sampleRate, numberOfChannels: config.channels };
    const refuse = () => {
      if (decoder !== dec) return;
      if (dec.state !== 'closed') dec.close();
      decoder = null;
      stats.state = 'unsupported';
      render();
    };
    try {
      dec.configure(settings);
    } catch (e) {
      console.warn('audio decoder configuration refused', e);
      refuse();
      return;
    }
    AudioDecoder.isConfigSupported(settings).then((r) => { if (!r.supported) refuse(); }, refuse);
  }

  let backoff = 250;
  let current = null; // the open or opening socket
  function connect() {
    if (window.playpodEnded) return;
    const socket = new WebSocket(wsBase + 'audio');
    current = socket;
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => { backoff = 250; };
    socket.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        const m = JSON.parse(ev.data);
        if (m.codec) {
          newDecoder(m);
        } else if (m.audio) {
          if (stats.state === 'unsupported') return;
          stats.state = m.audio;
          if (m.audio !== 'ok' && node) node.port.postMessage({ reset: true });
        }
        render();
        return;
      }
      const view = new DataView(ev.data);
      if (!decoder || decoder.state !== 'configured' || view.byteLength < 17 || view.getUint8(0) !== 2) return;
      stats.packets++;
      if (stats.state !== 'ok') { stats.state = 'ok'; render(); }
      // A decoder far behind (a stalled tab) restarts rather than playing old sound.
      if (decoder.decodeQueueSize > 20) { decoder.reset(); newDecoder({ codec: 'opus', sampleRate: 48000, channels: 2 }); }
      const index = nextIndex++;
      captures.set(index, Number(view.getBigUint64(8, true)));
      decoder.decode(new EncodedAudioChunk({
        type: 'key',
        timestamp: index * PACKET_US,
        data: new Uint8Array(ev.data, 16),
      }));
    };
    socket.onclose = (ev) => {
      current = null;
      if (decoder && decoder.state !== 'closed') decoder.close();
      decoder = null;
      if (ev.code === 1000 && ev.reason === 'audio is off') {
        stats.state = 'off';
        closedForGood = true;
        render();
        return;
      }
      if (window.playpodSessionEnded && window.playpodSessionEnded(ev)) {
        stats.state = 'ended';
        render();
        return;
      }
      stats.state = 'down';
      stats.reconnects++;
      render();
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }

  // The video found its connection silent (nothing for 5 s): after a network change (Wi-Fi
  // switched, a laptop asleep) this one is most likely dead too, and it cannot tell, as the pod
  // sends nothing while the game is silent. It is replaced at once, without waiting for a
  // closing handshake that nothing may answer.
  window.addEventListener('playpod-silent', () => {
    if (!current || current.readyState !== WebSocket.OPEN) return;
    const old = current;
    old.onclose = null; old.onmessage = null;
    old.close(1000, 'silent');
    current = null;
    if (decoder && decoder.state !== 'closed') decoder.close();
    decoder = null;
    stats.reconnects++;
    connect();
  });

  render();
  if (!closedForGood) connect();
})();
