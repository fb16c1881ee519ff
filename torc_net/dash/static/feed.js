// The websocket feed, coalesced: messages are buffered and handed over in batches at most
// every FLUSH_MS, so a feed carrying thousands of transitions a second costs a few renders a
// second. A closed feed (the server dropped a subscriber that fell behind: "overflow", or a
// restart) reconnects with backoff; every connection starts with the server's counts, which
// replace what the page had: the page resynchronises without a reload. The batch after a
// (re)connection starts with {type: "_connected"} so the page can refresh what counts alone
// do not cover (a page of the job table).
import { API } from './api.js';
import { setConn } from './util.js';

const FLUSH_MS = 250;

export function openFeed(path, onBatch) {
  let buffer = [];
  let timer = null;
  let backoff = 500;
  let stopped = false;
  let ws = null;
  let connections = 0;

  const flush = () => {
    timer = null;
    const batch = buffer;
    buffer = [];
    if (batch.length) onBatch(batch);
  };
  const schedule = () => { if (timer === null) timer = setTimeout(flush, FLUSH_MS); };

  function connect() {
    setConn(ws ? 'reconnecting' : 'connecting');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // batch=1: each frame is an array of messages (one per change, not per transition)
    ws = new WebSocket(`${scheme}//${location.host}${API}${path}?batch=1`);
    ws.onopen = () => {
      backoff = 500;
      setConn('live');
      // Visible to tests and curious users: how often the page had to start over.
      document.getElementById('app').dataset.resyncs = String(connections++);
      buffer.push({ type: '_connected' });
      schedule();
    };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (Array.isArray(m)) buffer.push(...m);
      else if (m.type === 'overflow') { setConn('reconnecting'); return; } else buffer.push(m);
      schedule();
    };
    ws.onclose = () => {
      if (stopped) return;
      setConn('reconnecting');
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 8000);
    };
  }
  connect();
  return { close() { stopped = true; ws?.close(); }, flushNow: flush };
}

/** Apply a batch of feed messages to per-workflow counts (a Map id -> {status: n}).
 *  Returns the ids whose counts changed and the workflow events seen. */
export function applyCounts(countsById, batch) {
  const changed = new Set();
  const events = [];
  for (const m of batch) {
    if (m.type === 'counts') {
      countsById.set(m.workflow_id, { ...m.counts });
      changed.add(m.workflow_id);
    } else if (m.type === 'job_status') {
      const c = countsById.get(m.workflow_id);
      if (c) {
        c[m.old] = (c[m.old] || 0) - 1;
        c[m.new] = (c[m.new] || 0) + 1;
        changed.add(m.workflow_id);
      }
    } else if (m.type === 'workflow') {
      events.push(m);
      changed.add(m.workflow_id);
    }
  }
  return { changed, events };
}
