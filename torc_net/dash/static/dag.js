// The DAG view: a workflow's dependency graph drawn as SVG, kept live from the feed.
//
// Theory of operation
// -------------------
// The server (GET /workflows/{id}/dag, torc_net/api_dag.py) answers either
//   * mode "graph": every job and barrier node and every stored edge (a barrier is one node
//     with edges in and out, not |U|*|D| edges), each job with its name pattern (`group`); or
//   * mode "summary" (above max_nodes jobs): jobs per name pattern with counts per status,
//     and edges between patterns.
//
// Graph layout, by hand, left to right:
//   1. Layers: longest path from the sources (Kahn's order; a cycle, which only a summary's
//      pattern graph can have, is broken at its first node).
//   2. Blocks: jobs of one pattern in one layer (>= 2 of them) form a cluster; a cluster of
//      more than COLLAPSE_AT jobs is drawn collapsed ("pattern ×N" and a status bar) until
//      clicked. Every other node is a block of its own.
//   3. Order: blocks start in job order, then BARY_PASSES down and up sweeps sort each layer
//      by the mean position of its neighbours. Order is per block, so expanding or
//      collapsing a cluster only moves slots: the picture does not reshuffle.
//   4. Place: a layer is a column of slots (an expanded cluster's members side by side), cut
//      into several columns when it is much longer than the graph is wide.
// Edges are one <path> (thousands of <path>s cost more than the nodes); the view box is the
// camera: drag pans, the wheel zooms about the pointer, labels hide when too small to read.
//
// Live statuses: update(changes) takes [jobId, status] pairs (the feed's job_status `new`)
// and recolours only those nodes (a Map jobId -> element) and the status bars of collapsed
// clusters they belong to. A summary has no per-job data: there, entries must be
// [jobId, status, name, oldStatus] (the feed's job_id, new, name, old); the pattern comes
// from the name by patternOf, the same rule as the server's (torc_net.api_dag.pattern_of).

import { STATUSES } from './statuses.js';

const SVG = 'http://www.w3.org/2000/svg';

export { STATUSES };
const FALLBACK = {
  uninitialized: '#b0b7c3', blocked: '#8d99ae', ready: '#4c9be8', pending: '#9b7fe0',
  running: '#f2a33a', completed: '#3a9d5d', failed: '#d64545', canceled: '#6b6b6b',
  terminated: '#b5485d', disabled: '#d9d9d9', pending_failed: '#e57373',
};
/** status -> the fill: the page's colour variable (dash.css), with a fallback of our own. */
export const FILL = Object.fromEntries(STATUSES.map((s) => [s, `var(--st-${s}, ${FALLBACK[s]})`]));

/** Clusters larger than this start collapsed. */
export const COLLAPSE_AT = 8;
const BARY_PASSES = 4;
const NODE_W = 150, NODE_H = 24, ROW_H = 32, COL_W = 190, LAYER_GAP = 50;
const SUM_W = 220, SUM_H = 46, SUM_ROW = 62, SUM_COL = 300;
const BAR_H = 5;
/** Labels are hidden when a node would be drawn smaller than this many pixels high. */
const MIN_LABEL_PX = 9;

/** A job name's pattern: every number replaced by {} (the server's rule, exactly). */
export function patternOf(name) {
  return String(name).replace(/[0-9]+(?:\.[0-9]+)?/g, '{}');
}

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' };

function esc(text) {
  return String(text).replace(/[&<>"]/g, (ch) => ESCAPES[ch]);
}

function short(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function countsText(counts) {
  return STATUSES.filter((s) => counts[s]).map((s) => `${s} ${counts[s]}`).join(', ');
}

// ---------------------------------------------------------------------------------------------
// Layout (pure: numbers in, numbers out)

/** Longest-path layer of each of n nodes; succ/pred: arrays of neighbour lists. */
export function layerOf(n, succ, pred) {
  const layer = new Int32Array(n);
  const indeg = new Int32Array(n);
  for (let v = 0; v < n; v++) indeg[v] = pred[v].length;
  const placed = new Uint8Array(n);
  const queue = [];
  for (let v = 0; v < n; v++) if (indeg[v] === 0) queue.push(v);
  let head = 0, done = 0, scan = 0;
  while (done < n) {
    if (head === queue.length) { // a cycle: break it at its first unplaced node
      while (placed[scan]) scan++;
      queue.push(scan);
    }
    const u = queue[head++];
    if (placed[u]) continue;
    placed[u] = 1;
    done++;
    const next = layer[u] + 1;
    for (const v of succ[u]) {
      if (placed[v]) continue;
      if (layer[v] < next) layer[v] = next;
      if (--indeg[v] === 0) queue.push(v);
    }
  }
  return layer;
}

/** Order each layer's blocks: start order, then barycenter sweeps. Returns layers of ids. */
export function orderLayers(numBlocks, layerOfBlock, succ, pred) {
  let maxLayer = 0;
  for (let b = 0; b < numBlocks; b++) maxLayer = Math.max(maxLayer, layerOfBlock[b]);
  const layers = Array.from({ length: maxLayer + 1 }, () => []);
  for (let b = 0; b < numBlocks; b++) layers[layerOfBlock[b]].push(b);
  const pos = new Float64Array(numBlocks);
  const setPos = (row) => {
    const len = row.length;
    for (let i = 0; i < len; i++) pos[row[i]] = (i + 0.5) / len;
  };
  layers.forEach(setPos);
  const key = new Float64Array(numBlocks);
  const sweep = (row, nbrs) => {
    for (const b of row) {
      const list = nbrs[b];
      if (!list.length) { key[b] = pos[b]; continue; }
      let sum = 0;
      for (const m of list) sum += pos[m];
      key[b] = sum / list.length;
    }
    row.sort((a, b) => key[a] - key[b] || pos[a] - pos[b]);
    setPos(row);
  };
  for (let pass = 0; pass < BARY_PASSES; pass++) {
    for (let l = 1; l <= maxLayer; l++) sweep(layers[l], pred);
    for (let l = maxLayer - 1; l >= 0; l--) sweep(layers[l], succ);
  }
  return layers;
}

/** Columns for a layer of `slots`: long layers wrap so the picture stays roughly square. */
function columnsFor(slots, cap) {
  const cols = Math.max(1, Math.ceil(slots / cap));
  return { cols, rows: Math.max(1, Math.ceil(slots / cols)) };
}

function adjacency(n, pairs) {
  const succ = Array.from({ length: n }, () => []);
  const pred = Array.from({ length: n }, () => []);
  for (let k = 0; k < pairs.length; k += 2) {
    succ[pairs[k]].push(pairs[k + 1]);
    pred[pairs[k + 1]].push(pairs[k]);
  }
  return { succ, pred };
}

// ---------------------------------------------------------------------------------------------
// The camera: an <svg> whose viewBox pans and zooms

class Viewport {
  constructor(host, nodeHeight) {
    this.nodeHeight = nodeHeight;
    this.svg = el('svg', { class: 'dag-svg', role: 'img', 'aria-label': 'workflow graph' });
    this.edges = el('g', { class: 'dag-edges' }, this.svg);
    this.nodes = el('g', { class: 'dag-nodes' }, this.svg);
    host.appendChild(this.svg);
    this.vb = { x: 0, y: 0, w: 1000, h: 600 };
    this.content = { x: 0, y: 0, w: 1000, h: 600 };
    this.dragged = false;
    this.drag = null;
    this.onWheel = (e) => this.wheel(e);
    this.onDown = (e) => this.down(e);
    this.onMove = (e) => this.move(e);
    this.onUp = () => this.up();
    this.svg.addEventListener('wheel', this.onWheel, { passive: false });
    this.svg.addEventListener('pointerdown', this.onDown);
    this.resize = typeof ResizeObserver === 'function' ? new ResizeObserver(() => this.lod()) : null;
    this.resize?.observe(this.svg);
  }

  /** Show all of `box` (padded); a small graph is not blown up past its natural size. */
  fit(box = this.content) {
    this.content = box;
    const pad = 20;
    const w = Math.max(box.w + 2 * pad, 800), h = Math.max(box.h + 2 * pad, 360);
    this.vb = { x: box.x + box.w / 2 - w / 2, y: box.y + box.h / 2 - h / 2, w, h };
    this.apply();
  }

  apply() {
    const { x, y, w, h } = this.vb;
    this.svg.setAttribute('viewBox', `${x} ${y} ${w} ${h}`);
    this.lod();
  }

  /** Units of the view box per screen pixel (meet: the larger of the two). */
  unitsPerPixel() {
    const r = this.svg.getBoundingClientRect();
    if (!r.width || !r.height) return 0;
    return Math.max(this.vb.w / r.width, this.vb.h / r.height);
  }

  lod() {
    const upp = this.unitsPerPixel();
    if (upp) this.svg.classList.toggle('dag-far', this.nodeHeight / upp < MIN_LABEL_PX);
  }

  toSvg(clientX, clientY, inverse) {
    const m = inverse || this.svg.getScreenCTM()?.inverse();
    if (!m) return { x: this.vb.x, y: this.vb.y };
    return new DOMPoint(clientX, clientY).matrixTransform(m);
  }

  wheel(e) {
    e.preventDefault();
    const f = Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.0015)));
    const big = Math.max(this.content.w, this.content.h) * 4 + 2000;
    const w = this.vb.w * f;
    if ((f > 1 && w > big) || (f < 1 && w < 200)) return;
    const p = this.toSvg(e.clientX, e.clientY);
    this.vb = { x: p.x - (p.x - this.vb.x) * f, y: p.y - (p.y - this.vb.y) * f,
      w, h: this.vb.h * f };
    this.apply();
  }

  down(e) {
    if (e.button !== 0) return;
    this.dragged = false;
    this.drag = { sx: e.clientX, sy: e.clientY, vb: { ...this.vb },
      inv: this.svg.getScreenCTM()?.inverse() };
    this.drag.p0 = this.toSvg(e.clientX, e.clientY, this.drag.inv);
    window.addEventListener('pointermove', this.onMove);
    window.addEventListener('pointerup', this.onUp);
  }

  move(e) {
    const d = this.drag;
    if (!d) return;
    if (!this.dragged && Math.hypot(e.clientX - d.sx, e.clientY - d.sy) < 4) return;
    this.dragged = true;
    this.svg.classList.add('dag-panning');
    const p = this.toSvg(e.clientX, e.clientY, d.inv);
    this.vb = { ...d.vb, x: d.vb.x - (p.x - d.p0.x), y: d.vb.y - (p.y - d.p0.y) };
    this.apply();
  }

  up() {
    this.drag = null;
    this.svg.classList.remove('dag-panning');
    window.removeEventListener('pointermove', this.onMove);
    window.removeEventListener('pointerup', this.onUp);
  }

  destroy() {
    this.up();
    this.resize?.disconnect();
    this.svg.removeEventListener('wheel', this.onWheel);
    this.svg.removeEventListener('pointerdown', this.onDown);
  }
}

/** A stacked status bar of `width` at (x, y) in `g`, replacing what `g` held. */
function drawBar(g, counts, total, x, y, width, height) {
  g.replaceChildren();
  if (!total) return;
  let at = x;
  for (const s of STATUSES) {
    const c = counts[s];
    if (!c) continue;
    const w = (width * c) / total;
    el('rect', { x: at, y, width: w, height, style: `fill:${FILL[s]}`, 'data-status': s }, g);
    at += w;
  }
}

function toolbar(host, items) {
  const bar = document.createElement('div');
  bar.className = 'dag-toolbar';
  for (const item of items) bar.appendChild(item);
  const legend = document.createElement('span');
  legend.className = 'dag-legend';
  for (const s of STATUSES) {
    const key = document.createElement('span');
    const sw = document.createElement('i');
    sw.style.background = FILL[s];
    key.append(sw, s.replace('_', ' '));
    legend.appendChild(key);
  }
  bar.appendChild(legend);
  host.appendChild(bar);
  return bar;
}

function button(label, onclick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', onclick);
  return b;
}

function caption(text) {
  const c = document.createElement('span');
  c.className = 'dag-caption';
  c.textContent = text;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Graph mode

class GraphView {
  constructor(host, data, onSelectJob) {
    this.onSelectJob = onSelectJob;
    const nodes = data.nodes;
    const n = nodes.length;
    this.n = n;
    this.nodes = nodes;
    this.status = new Map(); // jobId -> status
    this.jobEl = new Map(); // jobId -> its <g> (while drawn)
    this.clusterOf = new Map(); // jobId -> cluster
    this.nameOf = new Map(); // jobId -> name
    this.selected = null;
    const index = new Map();
    nodes.forEach((node, i) => {
      index.set(node.id, i);
      if (node.kind === 'job') {
        this.status.set(node.job_id, node.status);
        this.nameOf.set(node.job_id, node.name);
      }
    });
    const pairs = new Int32Array(data.edges.length * 2);
    let m = 0;
    for (const [a, b] of data.edges) {
      const u = index.get(a), v = index.get(b);
      if (u === undefined || v === undefined) continue;
      pairs[m++] = u;
      pairs[m++] = v;
    }
    this.pairs = pairs.subarray(0, m);
    const { succ, pred } = adjacency(n, this.pairs);
    const layer = layerOf(n, succ, pred);
    this.layer = layer;

    // Blocks: clusters (>= 2 jobs of one pattern in one layer) and single nodes.
    const byKey = new Map();
    nodes.forEach((node, i) => {
      if (node.kind !== 'job') return;
      const key = `${layer[i]}\u0000${node.group}`;
      const list = byKey.get(key);
      if (list) list.push(i); else byKey.set(key, [i]);
    });
    this.clusters = [];
    const blockOf = new Int32Array(n).fill(-1);
    const blocks = []; // {node} | {cluster}
    const layerOfBlock = [];
    nodes.forEach((node, i) => {
      if (blockOf[i] >= 0) return;
      const members = node.kind === 'job' ? byKey.get(`${layer[i]}\u0000${node.group}`) : null;
      const b = blocks.length;
      if (members && members.length >= 2) {
        const counts = {};
        for (const k of members) {
          const st = nodes[k].status;
          counts[st] = (counts[st] || 0) + 1;
        }
        const cluster = { index: this.clusters.length, block: b, pattern: node.group, members,
          counts, collapsed: members.length > COLLAPSE_AT, el: null };
        this.clusters.push(cluster);
        for (const k of members) {
          blockOf[k] = b;
          this.clusterOf.set(nodes[k].job_id, cluster);
        }
        blocks.push({ cluster });
      } else {
        blockOf[i] = b;
        blocks.push({ node: i });
      }
      layerOfBlock.push(layer[i]);
    });
    this.blocks = blocks;
    this.blockOf = blockOf;
    const B = blocks.length;
    const seen = new Set();
    const bpairs = [];
    for (let k = 0; k < this.pairs.length; k += 2) {
      const a = blockOf[this.pairs[k]], b = blockOf[this.pairs[k + 1]];
      const key = a * B + b;
      if (a === b || seen.has(key)) continue;
      seen.add(key);
      bpairs.push(a, b);
    }
    const badj = adjacency(B, bpairs);
    this.layers = orderLayers(B, layerOfBlock, badj.succ, badj.pred);

    const jobs = nodes.filter((x) => x.kind === 'job').length;
    this.toggleAll = (collapsed) => {
      for (const c of this.clusters) c.collapsed = collapsed;
      this.draw();
    };
    const items = [caption(`${jobs.toLocaleString()} jobs, ${(n - jobs).toLocaleString()} `
      + `barriers, ${data.edges.length.toLocaleString()} edges`),
    button('Fit', () => this.view.fit())];
    if (this.clusters.length) {
      items.push(button('Expand all', () => this.toggleAll(false)),
        button('Collapse all', () => this.toggleAll(true)));
    }
    toolbar(host, items);
    this.view = new Viewport(host, NODE_H);
    this.onClick = (e) => this.click(e);
    this.view.svg.addEventListener('click', this.onClick);
    this.draw();
  }

  /** Positions (slot centres) of every drawn item; item per node or collapsed cluster. */
  place() {
    let totalSlots = 0;
    const slotsOf = (b) => {
      const c = this.blocks[b].cluster;
      return c && !c.collapsed ? c.members.length : 1;
    };
    const layerSlots = this.layers.map((row) => {
      let s = 0;
      for (const b of row) s += slotsOf(b);
      totalSlots += s;
      return s;
    });
    const cap = Math.max(40, Math.ceil(Math.sqrt(totalSlots) * 1.5));
    const shapes = layerSlots.map((s) => columnsFor(s, cap));
    const maxRows = Math.max(1, ...shapes.map((s) => s.rows));
    const items = [];
    const itemOf = new Int32Array(this.n);
    let x0 = 0;
    this.layers.forEach((row, l) => {
      const { cols, rows } = shapes[l];
      const y0 = ((maxRows - rows) * ROW_H) / 2;
      let slot = 0;
      const put = (item) => {
        const col = Math.floor(slot / rows), r = slot % rows;
        item.x = x0 + col * COL_W;
        item.y = y0 + r * ROW_H;
        slot++;
        items.push(item);
        return items.length - 1;
      };
      for (const b of row) {
        const block = this.blocks[b];
        const c = block.cluster;
        if (!c) {
          itemOf[block.node] = put({ node: block.node });
        } else if (c.collapsed) {
          const it = put({ cluster: c });
          for (const k of c.members) itemOf[k] = it;
        } else {
          const first = items.length;
          for (const k of c.members) itemOf[k] = put({ node: k, cluster: c });
          c.span = [first, items.length];
        }
      }
      x0 += cols * COL_W + LAYER_GAP;
    });
    const box = { x: 0, y: 0, w: Math.max(NODE_W, x0 - LAYER_GAP - (COL_W - NODE_W)),
      h: maxRows * ROW_H - (ROW_H - NODE_H) };
    return { items, itemOf, box };
  }

  draw() {
    const { items, itemOf, box } = this.place();
    const v = this.view;
    // Markup, parsed once: thousands of createElementNS + setAttribute calls cost ~3x more.
    const parts = [];
    const drawnJobs = []; // job ids in the order of their <g class="dag-job">
    const drawnClusters = []; // collapsed clusters in the order of their <g class="dag-group">
    // Frames behind expanded clusters (with a collapse button), under the nodes.
    for (const c of this.clusters) {
      if (c.collapsed) continue;
      let x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
      for (let k = c.span[0]; k < c.span[1]; k++) {
        const it = items[k];
        x1 = Math.min(x1, it.x); y1 = Math.min(y1, it.y);
        x2 = Math.max(x2, it.x + NODE_W); y2 = Math.max(y2, it.y + NODE_H);
      }
      parts.push(`<g class="dag-frame" data-cluster="${c.index}"><rect x="${x1 - 4}" `
        + `y="${y1 - 4}" width="${x2 - x1 + 8}" height="${y2 - y1 + 8}" rx="6"/>`
        + `<g class="dag-toggle" data-cluster="${c.index}"><circle cx="${x2 + 4}" `
        + `cy="${y1 - 4}" r="7"/><path d="M${x2} ${y1 - 4}h8"/><title>collapse `
        + `${esc(c.pattern)} ×${c.members.length}</title></g></g>`);
    }
    for (const it of items) {
      if (it.node === undefined) { // a collapsed cluster
        const c = it.cluster;
        drawnClusters.push(c);
        parts.push(`<g class="dag-node dag-group" data-cluster="${c.index}" `
          + `transform="translate(${it.x},${it.y})"><rect class="dag-group-bg" `
          + `width="${NODE_W}" height="${NODE_H}" rx="4"/><text x="6" y="14">▸ `
          + `${esc(short(c.pattern, 15))} ×${c.members.length}</text><g class="dag-bar"></g>`
          + '<title></title></g>');
        continue;
      }
      const node = this.nodes[it.node];
      if (node.kind === 'barrier') {
        const cx = it.x + NODE_W / 2, cy = it.y + NODE_H / 2, r = 8;
        parts.push(`<g class="dag-barrier"><path d="M${cx} ${cy - r}L${cx + r} ${cy}L${cx} `
          + `${cy + r}L${cx - r} ${cy}Z"/><title>${esc(node.name)}</title></g>`);
        it.x1 = cx - r; it.x2 = cx + r;
        continue;
      }
      const id = node.job_id;
      const st = this.status.get(id);
      drawnJobs.push(id);
      parts.push(`<g class="dag-node dag-job${this.selected === id ? ' dag-selected' : ''}" `
        + `data-job="${id}" transform="translate(${it.x},${it.y})"><rect width="${NODE_W}" `
        + `height="${NODE_H}" rx="4" style="fill:${FILL[st] || ''}"/><text x="6" y="16">`
        + `${esc(short(node.name, 20))}</text><title>${esc(node.name)} (${st})</title></g>`);
    }
    // Edges: one path, item to item (each pair once), right side to left side.
    const seen = new Set();
    const I = items.length;
    const d = [];
    for (let k = 0; k < this.pairs.length; k += 2) {
      const a = itemOf[this.pairs[k]], b = itemOf[this.pairs[k + 1]];
      const key = a * I + b;
      if (a === b || seen.has(key)) continue;
      seen.add(key);
      const p = items[a], q = items[b];
      const x1 = p.x2 ?? p.x + NODE_W, y1 = p.y + NODE_H / 2;
      const x2 = q.x1 ?? q.x, y2 = q.y + NODE_H / 2;
      const dx = Math.max(24, Math.abs(x2 - x1) / 2);
      d.push(`M${x1} ${y1}C${x1 + dx} ${y1} ${x2 - dx} ${y2} ${x2} ${y2}`);
    }
    // The first time, fit before the nodes are in: far out, the labels are hidden before
    // they are ever laid out (shaping thousands of texts is the costliest part of a draw).
    if (!this.fitted) {
      this.fitted = true;
      v.fit(box);
    }
    v.content = box;
    v.edges.replaceChildren();
    if (d.length) el('path', { d: d.join('') }, v.edges);
    v.nodes.innerHTML = parts.join('');
    this.jobEl.clear();
    const jobs = v.nodes.getElementsByClassName('dag-job');
    for (let i = 0; i < drawnJobs.length; i++) this.jobEl.set(drawnJobs[i], jobs[i]);
    for (const c of this.clusters) c.el = null;
    const groups = v.nodes.getElementsByClassName('dag-group');
    drawnClusters.forEach((c, i) => {
      c.el = groups[i];
      c.bar = c.el.children[2];
      c.title = c.el.children[3];
      this.paintCluster(c);
    });
  }

  paintCluster(c) {
    drawBar(c.bar, c.counts, c.members.length, 0, NODE_H - BAR_H, NODE_W, BAR_H);
    c.title.textContent = `${c.pattern} ×${c.members.length} (click to expand): ${countsText(c.counts)}`;
  }

  click(e) {
    if (this.view.dragged) return;
    const target = e.target.closest('[data-job],[data-cluster]');
    if (!target) return;
    if (target.hasAttribute('data-job')) {
      const jobId = Number(target.getAttribute('data-job'));
      this.jobEl.get(this.selected)?.classList.remove('dag-selected');
      this.selected = jobId;
      target.classList.add('dag-selected');
      this.onSelectJob(jobId);
      return;
    }
    if (target.classList.contains('dag-frame')) return; // only its button collapses
    const c = this.clusters[Number(target.getAttribute('data-cluster'))];
    c.collapsed = !c.collapsed;
    this.draw();
  }

  update(changes) {
    const dirty = new Set();
    for (const change of changes) {
      const jobId = change[0], st = change[1];
      const old = this.status.get(jobId);
      if (old === undefined || old === st || !(st in FILL)) continue;
      this.status.set(jobId, st);
      const c = this.clusterOf.get(jobId);
      if (c) {
        c.counts[old] -= 1;
        c.counts[st] = (c.counts[st] || 0) + 1;
        if (c.collapsed) dirty.add(c);
      }
      const g = this.jobEl.get(jobId);
      if (g) {
        g.firstChild.style.fill = FILL[st];
        g.lastChild.textContent = `${this.nameOf.get(jobId)} (${st})`;
      }
    }
    for (const c of dirty) if (c.el) this.paintCluster(c);
  }

  destroy() {
    this.view.svg.removeEventListener('click', this.onClick);
    this.view.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Summary mode

class SummaryView {
  constructor(host, data) {
    const groups = data.groups;
    const G = groups.length;
    this.byPattern = new Map();
    this.truncated = data.truncated;
    this.groups = groups.map((g, i) => {
      const group = { index: i, pattern: g.pattern, count: g.count, counts: { ...g.counts },
        self: 0 };
      this.byPattern.set(g.pattern, group);
      return group;
    });
    const pairs = [];
    const weights = [];
    for (const [a, b, w] of data.edges) {
      const u = this.byPattern.get(a), v = this.byPattern.get(b);
      if (!u || !v) continue;
      if (u === v) { u.self += w; continue; }
      pairs.push(u.index, v.index);
      weights.push(w);
    }
    const { succ, pred } = adjacency(G, pairs);
    const layer = layerOf(G, succ, pred);
    const layers = orderLayers(G, layer, succ, pred);
    const cap = Math.max(12, Math.ceil(Math.sqrt(G) * 1.5));
    const shapes = layers.map((row) => columnsFor(row.length, cap));
    const maxRows = Math.max(1, ...shapes.map((s) => s.rows));
    let x0 = 0;
    layers.forEach((row, l) => {
      const { cols, rows } = shapes[l];
      const y0 = ((maxRows - rows) * SUM_ROW) / 2;
      row.forEach((gi, slot) => {
        const g = this.groups[gi];
        g.x = x0 + Math.floor(slot / rows) * SUM_COL;
        g.y = y0 + (slot % rows) * SUM_ROW;
      });
      x0 += cols * SUM_COL;
    });
    const box = { x: 0, y: 0, w: Math.max(SUM_W, x0 - (SUM_COL - SUM_W)),
      h: maxRows * SUM_ROW - (SUM_ROW - SUM_H) };

    toolbar(host, [caption(`Summary by job-name pattern: ${data.num_jobs.toLocaleString()} `
      + `jobs in ${G.toLocaleString()} groups${data.truncated ? ' (truncated: the smallest '
      + 'patterns are lumped, or edges left out)' : ''}`), button('Fit', () => this.view.fit())]);
    this.view = new Viewport(host, SUM_H);
    const v = this.view;
    const d = [];
    for (let k = 0; k < pairs.length; k += 2) {
      const p = this.groups[pairs[k]], q = this.groups[pairs[k + 1]];
      const x1 = p.x + SUM_W, y1 = p.y + SUM_H / 2, x2 = q.x, y2 = q.y + SUM_H / 2;
      const dx = Math.max(30, Math.abs(x2 - x1) / 2);
      d.push(`M${x1} ${y1}C${x1 + dx} ${y1} ${x2 - dx} ${y2} ${x2} ${y2}`);
    }
    if (d.length) el('path', { d: d.join('') }, v.edges);
    const frag = document.createDocumentFragment();
    for (const g of this.groups) {
      const node = el('g', { class: 'dag-node dag-pattern', 'data-pattern': g.pattern,
        transform: `translate(${g.x},${g.y})` }, frag);
      el('rect', { class: 'dag-group-bg', width: SUM_W, height: SUM_H, rx: 5 }, node);
      el('text', { x: 8, y: 16 }, node).textContent = short(g.pattern, 28);
      g.label = el('text', { class: 'dag-count', x: 8, y: 32 }, node);
      g.bar = el('g', { class: 'dag-bar' }, node);
      g.title = el('title', null, node);
      g.el = node;
      this.paint(g);
    }
    v.fit(box); // before the nodes are in (see GraphView.draw)
    v.nodes.appendChild(frag);
  }

  paint(g) {
    drawBar(g.bar, g.counts, g.count, 0, SUM_H - 7, SUM_W, 7);
    const done = g.counts.completed || 0;
    g.label.textContent = `×${g.count.toLocaleString()} · ${done.toLocaleString()} completed`
      + `${g.counts.failed ? ` · ${g.counts.failed.toLocaleString()} failed` : ''}`;
    g.title.textContent = `${g.pattern} ×${g.count}: ${countsText(g.counts)}`
      + `${g.self ? `; ${g.self} dependencies within the group` : ''}`;
  }

  update(changes) {
    const dirty = new Set();
    for (const change of changes) {
      const st = change[1], name = change[2], old = change[3];
      if (name === undefined || old === undefined || old === st || !(st in FILL)) continue;
      const g = this.byPattern.get(patternOf(name))
        ?? (this.truncated ? this.byPattern.get('(other)') : undefined);
      if (!g || !g.counts[old]) continue;
      g.counts[old] -= 1;
      g.counts[st] = (g.counts[st] || 0) + 1;
      dirty.add(g);
    }
    for (const g of dirty) this.paint(g);
  }

  destroy() {
    this.view.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Draw workflow `workflowId`'s DAG into `host` (an empty <div>).
 * getJson(path): the parsed JSON of GET /torc-service/v1 + path (throws on error).
 * onSelectJob(jobId): a job node was clicked. maxNodes: the server's max_nodes (graph mode up
 * to that many jobs; default: the server's).
 * Returns { mode, update(changes), destroy() }: see the header for what changes hold.
 */
export async function mountDag(host, { getJson, workflowId, onSelectJob = () => {}, maxNodes } = {}) {
  const query = maxNodes === undefined || maxNodes === null ? '' : `?max_nodes=${maxNodes}`;
  const data = await getJson(`/workflows/${workflowId}/dag${query}`);
  host.classList.add('dag-root');
  const view = data.mode === 'graph' ? new GraphView(host, data, onSelectJob)
    : new SummaryView(host, data);
  let live = true;
  return {
    mode: data.mode,
    update(changes) {
      if (live) view.update(changes);
    },
    destroy() {
      if (!live) return;
      live = false;
      view.destroy();
      host.replaceChildren();
      host.classList.remove('dag-root');
    },
  };
}
