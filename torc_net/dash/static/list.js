// The workflows list: every workflow the user may see, live from the all-workflows feed.
import { getJson } from './api.js';
import { applyCounts, openFeed } from './feed.js';
import { bar, fmtInt, fmtTime, h, setBar, showWho, toast } from './util.js';

const PAGE = 1000;
/** Shown at most (the API pages; a user with more sees the newest and a note). */
const MAX_ROWS = 20000;

const app = document.getElementById('app');
const workflows = new Map(); // id -> workflow object
const counts = new Map(); // id -> {status: n}
const rows = new Map(); // id -> {tr, bar, done, state}
const pendingFetch = new Set();

const tbody = h('tbody');
const note = h('p', { class: 'muted', id: 'list-note' });
const empty = h('div', { class: 'empty', id: 'list-empty', hidden: true },
  'No workflows yet. Create one with ', h('code', {}, 'torc-trio create spec.yaml'), '.');

function state(wf) {
  if (wf.is_canceled) return 'canceled';
  if (wf.is_complete) return 'complete';
  return 'active';
}

function row(wf) {
  let r = rows.get(wf.id);
  if (!r) {
    const b = bar();
    r = { bar: b, done: h('td', { class: 'done' }), state: h('td', { class: 'state' }),
      name: h('a', { href: `/workflows/${wf.id}` }), jobs: h('td', { class: 'jobs' }) };
    r.tr = h('tr', { 'data-workflow-id': wf.id },
      h('td', {}, wf.id), h('td', { class: 'name' }, r.name), h('td', {}, wf.user ?? '—'),
      h('td', {}, fmtTime(wf.created_at)), r.jobs, h('td', {}, b), r.done, r.state);
    rows.set(wf.id, r);
    // newest first
    const after = [...tbody.children].find((tr) => Number(tr.dataset.workflowId) < wf.id);
    tbody.insertBefore(r.tr, after || null);
  }
  r.name.textContent = wf.name;
  r.name.title = wf.description || '';
  r.jobs.textContent = fmtInt(wf.num_jobs);
  r.state.textContent = state(wf);
  r.state.dataset.state = state(wf);
  return r;
}

function renderCounts(id) {
  const wf = workflows.get(id), c = counts.get(id), r = rows.get(id);
  if (!wf || !c || !r) return;
  setBar(r.bar, c, wf.num_jobs);
  r.done.textContent = `${fmtInt(c.completed || 0)} / ${fmtInt(wf.num_jobs)}`;
}

async function fetchWorkflow(id) {
  if (pendingFetch.has(id)) return;
  pendingFetch.add(id);
  try {
    const [wf, st] = await Promise.all([getJson(`/workflows/${id}`), getJson(`/workflows/${id}/status`)]);
    workflows.set(id, wf);
    if (!counts.has(id)) counts.set(id, st.counts);
    row(wf);
    renderCounts(id);
    empty.hidden = true;
  } catch (err) {
    if (err.status === 404 || err.status === 403) removeWorkflow(id);
    else toast(`workflow ${id}: ${err.message}`, 'error');
  } finally {
    pendingFetch.delete(id);
  }
}

function removeWorkflow(id) {
  workflows.delete(id);
  counts.delete(id);
  rows.get(id)?.tr.remove();
  rows.delete(id);
  empty.hidden = workflows.size > 0;
}

async function loadAll() {
  let offset = 0, total = 0;
  const seen = new Set();
  do {
    const page = await getJson('/workflows', { offset, limit: PAGE });
    total = page.total;
    for (const wf of page.items) { seen.add(wf.id); workflows.set(wf.id, wf); row(wf); renderCounts(wf.id); }
    offset += page.items.length;
    if (!page.items.length) break;
  } while (offset < total && offset < MAX_ROWS);
  if (offset >= total) for (const id of [...workflows.keys()]) if (!seen.has(id)) removeWorkflow(id);
  note.textContent = total > MAX_ROWS ? `Showing ${fmtInt(MAX_ROWS)} of ${fmtInt(total)} workflows.` : '';
  empty.hidden = total > 0;
}

let connections = 0;

function onBatch(batch) {
  // A reconnection (the feed dropped us, or the server restarted): counts come again with
  // the new connection; what else may have been missed (new, finished, deleted workflows)
  // is read again.
  const reconnected = batch.filter((m) => m.type === '_connected').length;
  if (reconnected && (connections += reconnected) > 1) loadAll().catch((err) => toast(err.message, 'error'));
  const { changed, events } = applyCounts(counts, batch);
  for (const m of events) {
    if (m.event === 'deleted') { removeWorkflow(m.workflow_id); changed.delete(m.workflow_id); } else fetchWorkflow(m.workflow_id);
  }
  for (const id of changed) {
    if (workflows.has(id)) renderCounts(id);
    else fetchWorkflow(id);
  }
  app.dataset.updated = String(Date.now());
}

async function main() {
  showWho();
  document.getElementById('crumbs').textContent = 'Workflows';
  app.append(h('h1', {}, 'Workflows'), note,
    h('div', { class: 'card', style: 'padding:0' },
      h('table', { class: 'grid', id: 'workflows' },
        h('thead', {}, h('tr', {}, ['ID', 'Name', 'Owner', 'Created', 'Jobs', 'Progress', 'Completed', 'State'].map((t) => h('th', {}, t)))),
        tbody)),
    empty);
  try {
    await loadAll();
  } catch (err) {
    toast(err.message, 'error');
  }
  // The feed's first messages are every visible workflow's counts: rows fill in from them.
  openFeed('/events/ws', onBatch);
  // first render done: when (ms since navigation) is what benchmarks/bench_dash.py reports
  app.dataset.readyMs = performance.now().toFixed(1);
  app.dataset.ready = '1';
}

main();
