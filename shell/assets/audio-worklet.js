// playpod audio worklet: plays decoded Opus from a small adaptive jitter buffer, kept in step
// with the video through the capture times. Chunks arrive from audio.js as
// { captureUs, left: Float32Array, right: Float32Array }; the main thread also sends the wall
// clock of the context ({ sync }) and the video's delay ({ videoDelayUs }).
'use strict';

const TARGET_MS = 40;   // jitter buffer target when the video gives no reference
const MIN_MS = 15;      // never speed up below this much buffered
const MAX_MS = 150;     // never slow down above this much buffered
const CAP_MS = 250;     // beyond this, drop the oldest audio down to the target
const DEAD_BAND_MS = 8; // errors smaller than this leave the rate at 1
const MAX_RATE_DEV = 0.05;
// The pod sends no packets for digital silence (after its first 30 ms): a chunk whose capture
// time starts this far past the end of the last one follows such a silence.
const SILENCE_GAP_US = 5000;

class PlaypodAudio extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];      // chunks, oldest first
    this.pos = 0;         // read position (fractional frames) in queue[0]
    this.buffered = 0;    // frames queued, less pos
    this.playing = false;
    this.underruns = 0;   // ran dry, and the next chunk carried straight on: it came late
    this.silences = 0;    // ran dry over a silence the pod did not send
    this.endUs = null;    // capture time just past the newest chunk
    this.dryAtUs = null;  // endUs when the queue last ran dry
    this.dropped = 0;     // frames dropped (buffer cap or sync)
    this.stretched = 0;   // frames added by slowing down
    this.sync = null;     // { contextTime, wallUs, outputLatency }
    this.videoDelayUs = null;
    this.delayUs = null;
    this.rate = 1;
    this.quanta = 0;
    this.port.onmessage = (ev) => {
      const m = ev.data;
      if (m.chunk) {
        if (this.dryAtUs !== null) {
          if (m.chunk.captureUs - this.dryAtUs > SILENCE_GAP_US) this.silences++;
          else this.underruns++;
          this.dryAtUs = null;
        }
        this.endUs = m.chunk.captureUs + (m.chunk.left.length / sampleRate) * 1e6;
        this.queue.push(m.chunk);
        this.buffered += m.chunk.left.length;
      } else if (m.sync) {
        this.sync = m.sync;
      } else if ('videoDelayUs' in m) {
        this.videoDelayUs = m.videoDelayUs;
      } else if (m.reset) {
        this.queue = []; this.pos = 0; this.buffered = 0; this.playing = false;
        this.endUs = null; this.dryAtUs = null;
      }
    };
  }

  ms(frames) { return (frames / sampleRate) * 1000; }

  // Ran dry: play silence and wait to refill to the target. The next chunk tells whether this
  // was an underrun or a silence the pod did not send.
  runDry() {
    this.playing = false; this.buffered = 0; this.pos = 0;
    this.dryAtUs = this.endUs;
  }

  dropFrames(frames) {
    while (frames > 0 && this.queue.length) {
      const head = this.queue[0];
      const left = head.left.length - this.pos;
      if (frames >= left) {
        this.queue.shift(); this.pos = 0; frames -= left; this.buffered -= left; this.dropped += left;
      } else {
        this.pos += frames; this.buffered -= frames; this.dropped += frames; frames = 0;
      }
    }
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const l = out[0], r = out[1] || out[0];
    const n = l.length;
    if (this.ms(this.buffered) > CAP_MS) {
      this.dropFrames(this.buffered - Math.round((TARGET_MS / 1000) * sampleRate));
    }
    if (!this.playing && this.ms(this.buffered) >= TARGET_MS) this.playing = true;
    if (this.playing && !this.queue.length) this.runDry(); // at a quantum's edge
    if (!this.playing || !this.queue.length) {
      l.fill(0); if (r !== l) r.fill(0);
      this.report();
      return true;
    }
    // How late the sample about to be heard is, relative to its capture.
    const head = this.queue[0];
    if (this.sync) {
      const wallNowUs = this.sync.wallUs + (currentTime - this.sync.contextTime) * 1e6;
      const heardUs = wallNowUs + this.sync.outputLatency * 1e6;
      this.delayUs = heardUs - (head.captureUs + (this.pos / sampleRate) * 1e6);
    }
    const bufMs = this.ms(this.buffered);
    let errMs;
    if (this.videoDelayUs !== null && this.delayUs !== null) {
      errMs = (this.delayUs - this.videoDelayUs) / 1000;
      if (errMs > 0 && bufMs < MIN_MS) errMs = 0;
      if (errMs < 0 && bufMs > MAX_MS) errMs = 0;
    } else {
      errMs = bufMs - TARGET_MS;
    }
    // Far off (a stall, a jump): drop at once instead of speeding up for seconds.
    if (errMs > 120 && bufMs - errMs >= MIN_MS) {
      this.dropFrames(Math.round((errMs / 1000) * sampleRate));
      errMs = 0;
    }
    const dev = Math.abs(errMs) < DEAD_BAND_MS ? 0 : Math.max(-MAX_RATE_DEV, Math.min(MAX_RATE_DEV, errMs / 1000));
    this.rate = 1 + dev;
    for (let i = 0; i < n; i++) {
      let chunk = this.queue[0];
      while (chunk && this.pos >= chunk.left.length) {
        this.pos -= chunk.left.length;
        this.queue.shift();
        chunk = this.queue[0];
      }
      if (!chunk) {
        l.fill(0, i); if (r !== l) r.fill(0, i);
        this.runDry();
        break;
      }
      const k = Math.floor(this.pos);
      const f = this.pos - k;
      const next = k + 1 < chunk.left.length ? k + 1 : k;
      l[i] = chunk.left[k] + (chunk.left[next] - chunk.left[k]) * f;
      if (r !== l) r[i] = chunk.right[k] + (chunk.right[next] - chunk.right[k]) * f;
      this.pos += this.rate;
      this.buffered -= this.rate;
      if (this.rate < 1) this.stretched += 1 - this.rate;
    }
    this.report();
    return true;
  }

  report() {
    if (++this.quanta % 20) return;
    this.port.postMessage({
      bufferedMs: Math.max(0, this.ms(this.buffered)),
      underruns: this.underruns,
      silences: this.silences,
      droppedMs: this.ms(this.dropped),
      stretchedMs: this.ms(this.stretched),
      playing: this.playing,
      delayUs: this.delayUs,
      rate: this.rate,
    });
  }
}

registerProcessor('playpod-audio', PlaypodAudio);
